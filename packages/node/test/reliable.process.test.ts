// Reliable delivery between real processes over TLS on 127.0.0.1, one of them killed with SIGKILL
// mid-run and started again with its key and data directory. Each process is the harness in
// fixtures/reliableNode.ts: it broadcasts numbered AppMessages reliably and prints every delivery as
// a JSON line (written synchronously, so a killed process's lines are all there). About 30 s of
// real processes: for CI's main pass, not its Node 26 rerun (.ci/run leaves slow suites out of it).
import { type ChildProcess, spawn } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { assert, it } from "@effect/vitest"
import * as Deferred from "effect/Deferred"
import type * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import type * as Scope from "effect/Scope"
import type { NodeConfig } from "../src/index.js"
import { reservePorts } from "../src/internal/ports.js"
import { PACKAGE } from "./fixtures/cli.js"
import { configFor, peerId } from "./fixtures/cluster.js"
import { notExactly } from "./fixtures/reliable.js"
import { waitLive } from "./fixtures/wait.js"

/** Messages each process broadcasts every 10 ms: about 500 a second. */
const PER_TICK = 5
/** The receiver acknowledges every `ackEvery` (64) deliveries or `ackDelay` (10 ms) after one. */
const MAX_REPEATED = 200

interface Delivery {
  readonly origin: string
  readonly incarnation: bigint
  readonly sequence: bigint
  readonly number: number
  readonly topic: string
}

/** One run of the harness: what it printed so far, and its exit. */
interface Run {
  readonly name: string
  readonly topic: string
  readonly child: ChildProcess
  readonly deliveries: Array<Delivery>
  connected: boolean
  /** The last number it said it broadcast (-1 before the first batch). */
  lastSent: number
  /** How many it broadcast in all, once stopped. */
  sent: number | undefined
  closed: boolean
  exit: { readonly code: number | null; readonly signal: NodeJS.Signals | null } | undefined
  readonly exited: Deferred.Deferred<void>
  readonly stderr: Array<string>
  readonly send: (command: string) => void
}

const startRun = (
  name: string,
  topic: string,
  config: NodeConfig.NodeConfigInput,
  directory: string
): Effect.Effect<Run, never, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.gen(function* () {
      const file = path.join(directory, `${topic}.json`)
      fs.writeFileSync(file, JSON.stringify(config))
      const child = spawn(
        process.execPath,
        [
          "--import",
          "tsx",
          "--conditions=@hotstuff2/source",
          "test/fixtures/reliableNode.ts",
          file,
          topic,
          String(PER_TICK)
        ],
        { cwd: PACKAGE, env: { ...process.env, NO_COLOR: "1" }, stdio: ["pipe", "pipe", "pipe"] }
      )
      const run: Run = {
        name,
        topic,
        child,
        deliveries: [],
        connected: false,
        lastSent: -1,
        sent: undefined,
        closed: false,
        exit: undefined,
        exited: yield* Deferred.make<void>(),
        stderr: [],
        send: (command) => {
          if (child.stdin?.writable === true) child.stdin.write(`${command}\n`)
        }
      }
      let partial = ""
      child.stdout?.on("data", (chunk: Buffer) => {
        const lines = (partial + chunk.toString("utf8")).split("\n")
        partial = lines.pop() ?? ""
        for (const line of lines) {
          if (line.trim() === "") continue
          let parsed: Record<string, unknown>
          try {
            parsed = JSON.parse(line)
          } catch {
            run.stderr.push(`stdout: ${line}`)
            continue
          }
          switch (parsed.event) {
            case undefined:
              run.deliveries.push({
                origin: parsed.origin as string,
                incarnation: BigInt(parsed.incarnation as string),
                sequence: BigInt(parsed.sequence as string),
                number: parsed.number as number,
                topic: parsed.topic as string
              })
              break
            case "connected":
              run.connected = true
              break
            case "sent":
              run.lastSent = parsed.last as number
              break
            case "stopped":
              run.sent = parsed.sent as number
              break
            case "closed":
              run.closed = true
              break
            default:
              run.stderr.push(line)
          }
        }
      })
      child.stderr?.on("data", (chunk: Buffer) => {
        run.stderr.push(chunk.toString("utf8"))
        if (run.stderr.length > 40) run.stderr.shift()
      })
      child.on("exit", (code, signal) => {
        run.exit = { code, signal }
        Deferred.unsafeDone(run.exited, Effect.void)
      })
      child.on("error", (e) => {
        run.stderr.push(`spawn error: ${e.message}`)
        run.exit ??= { code: null, signal: null }
        Deferred.unsafeDone(run.exited, Effect.void)
      })
      return run
    }),
    (run) => Effect.sync(() => run.exit === undefined && run.child.kill("SIGKILL"))
  )

const describeRuns = (runs: ReadonlyArray<Run>) =>
  runs
    .map(
      (r) =>
        `${r.name} (pid ${r.child.pid}, ${r.exit === undefined ? "running" : `exited ${r.exit.signal ?? r.exit.code}`}, ` +
        `${r.deliveries.length} deliveries, last sent ${r.lastSent}):\n${r.stderr.join("").slice(-2000)}`
    )
    .join("\n")

/** The deliveries of `topic` from `origin` that `run` printed, in order. */
const from = (run: Run, origin: string, topic: string) =>
  run.deliveries.filter((d) => d.origin === origin && d.topic === topic)
const lastOf = (run: Run, origin: string, topic: string) => from(run, origin, topic).at(-1)?.number
const numbers = (deliveries: ReadonlyArray<Delivery>) => deliveries.map((d) => d.number)

/**
 * Each delivery of one origin's stream to one receiver is its place in that stream: the origin
 * broadcast nothing but its numbered messages, reliably, so sequence = number + 1, and it ran as one
 * incarnation. Returns that incarnation.
 */
const oneStream = (deliveries: ReadonlyArray<Delivery>, what: string): bigint | undefined => {
  const incarnations = new Set(deliveries.map((d) => d.incarnation))
  assert.isAtMost(incarnations.size, 1, `${what}: one incarnation, saw ${[...incarnations].join(", ")}`)
  const off = deliveries.findIndex((d) => d.sequence !== BigInt(d.number + 1))
  assert.strictEqual(off, -1, `${what}: delivery ${off} is not at sequence number + 1`)
  return deliveries[0]?.incarnation
}

it.scopedLive(
  "three validators broadcast reliably while one is killed with SIGKILL and restarted: nothing lost, each run delivers once in order, a restarted sender's messages are new",
  () =>
    Effect.gen(function* () {
      const ports = yield* reservePorts(3)
      const addresses = ports.map((p) => `127.0.0.1:${p}`)
      const directory = yield* Effect.acquireRelease(
        Effect.sync(() => fs.mkdtempSync(path.join(os.tmpdir(), "hotstuff2-reliable-processes-"))),
        (dir) => Effect.sync(() => fs.rmSync(dir, { recursive: true, force: true }))
      )
      const config = (n: number) =>
        configFor(n, addresses, {
          dataDirectory: path.join(directory, `validator-${n}`),
          peers: { heartbeatInterval: 500, redialCap: 1000 }
        })
      const [A, B, C] = [peerId(0), peerId(1), peerId(2)]
      const runs: Array<Run> = []
      const start = (name: string, topic: string, n: number) =>
        Effect.tap(startRun(name, topic, config(n), directory), (run) => Effect.sync(() => runs.push(run)))
      const wait = (what: string, condition: () => boolean, within: Duration.DurationInput = "60 seconds") =>
        waitLive(
          what,
          Effect.suspend(() => {
            const dead = runs.find((r) => r.exit !== undefined && r.exit.signal !== "SIGKILL")
            return dead === undefined
              ? Effect.succeed(condition())
              : Effect.fail(new Error(`${dead.name} exited\n${describeRuns(runs)}`))
          }),
          { within, every: "50 millis" }
        ).pipe(Effect.mapError((e) => new Error(`${e.message}\n${describeRuns(runs)}`)))

      const a = yield* start("A", "a", 0)
      const b = yield* start("B", "b", 1)
      const c1 = yield* start("C (first run)", "c1", 2)
      yield* wait("A, B and C connected to each other", () => a.connected && b.connected && c1.connected)
      for (const run of [a, b, c1]) run.send("start")

      yield* wait(
        "C to deliver 1,000 messages of A and of B",
        () => from(c1, A, "a").length >= 1_000 && from(c1, B, "b").length >= 1_000
      )
      c1.child.kill("SIGKILL")
      yield* Deferred.await(c1.exited)
      // A and B go on broadcasting to C, which is down: their messages wait in their buffers.
      const aSentAtKill = a.lastSent
      const bSentAtKill = b.lastSent
      yield* Effect.sleep("1 second")
      const c2 = yield* start("C (second run)", "c2", 2)
      yield* wait("C's second run connected", () => c2.connected)
      c2.send("start")
      yield* wait(
        "C's second run to deliver 500 more of A and of B, and A and B 500 of C's",
        () =>
          (lastOf(c2, A, "a") ?? -1) >= aSentAtKill + 500 &&
          (lastOf(c2, B, "b") ?? -1) >= bSentAtKill + 500 &&
          from(a, C, "c2").length >= 500 &&
          from(b, C, "c2").length >= 500
      )

      for (const run of [a, b, c2]) run.send("stop")
      yield* wait("A, B and C to stop broadcasting", () => [a, b, c2].every((r) => r.sent !== undefined))
      const [sentA, sentB, sentC] = [a.sent!, b.sent!, c2.sent!]
      yield* wait(
        "every broadcast delivered to every live validator",
        () =>
          lastOf(a, B, "b") === sentB - 1 &&
          lastOf(a, C, "c2") === sentC - 1 &&
          lastOf(b, A, "a") === sentA - 1 &&
          lastOf(b, C, "c2") === sentC - 1 &&
          lastOf(c2, A, "a") === sentA - 1 &&
          lastOf(c2, B, "b") === sentB - 1,
        "30 seconds"
      )
      for (const run of [a, b, c2]) run.child.kill("SIGTERM")
      yield* Effect.forEach([a, b, c2], (run) => Deferred.await(run.exited), { discard: true }).pipe(
        Effect.timeoutFail({
          duration: "20 seconds",
          onTimeout: () => new Error(`a validator did not stop on SIGTERM\n${describeRuns(runs)}`)
        })
      )

      const context = describeRuns(runs)
      assert.strictEqual(c1.exit?.signal, "SIGKILL", "C's first run was killed")
      for (const run of [a, b, c2]) {
        assert.deepStrictEqual(run.exit, { code: 0, signal: null }, `${run.name} stopped cleanly\n${context}`)
        assert.isTrue(run.closed, `${run.name} closed its network`)
      }

      // (iii) A and B: every message of the other, once, in order, at its place in one stream.
      for (const [receiver, origin, topic, sent] of [
        [a, B, "b", sentB],
        [b, A, "a", sentA]
      ] as const) {
        const got = from(receiver, origin, topic)
        assert.isUndefined(notExactly(numbers(got), 0, sent - 1), `${receiver.name} from ${topic}`)
        oneStream(got, `${receiver.name} from ${topic}`)
      }

      // (ii) C's runs as a sender, at A and at B. The first run's messages arrived once each, in
      // order, up to where it died (what it held unacknowledged died with it). The second run's,
      // under a higher incarnation, all arrived once in order: none was taken for a repeat of the
      // first run's same sequence numbers.
      for (const receiver of [a, b]) {
        const first = from(receiver, C, "c1")
        const second = from(receiver, C, "c2")
        assert.isAbove(first.length, 0, `${receiver.name} got C's first run`)
        assert.isUndefined(notExactly(numbers(first), 0, first.length - 1), `${receiver.name} from c1`)
        assert.isAtMost(
          first.length,
          c1.lastSent + 1 + PER_TICK,
          `${receiver.name}: no more of c1 than it sent`
        )
        assert.isUndefined(notExactly(numbers(second), 0, sentC - 1), `${receiver.name} from c2`)
        const firstIncarnation = oneStream(first, `${receiver.name} from c1`)!
        const secondIncarnation = oneStream(second, `${receiver.name} from c2`)!
        assert.isTrue(
          secondIncarnation > firstIncarnation,
          `C's second incarnation ${secondIncarnation} is above its first ${firstIncarnation}`
        )
      }

      // (i) C as a receiver, over its two runs, of A and of B (alive the whole time). Each run
      // delivered once, in order; together they miss nothing; the second repeats only a short tail
      // of the first (delivered there but not yet acknowledged when it died).
      for (const [origin, topic, sent] of [
        [A, "a", sentA],
        [B, "b", sentB]
      ] as const) {
        const first = from(c1, origin, topic)
        const second = from(c2, origin, topic)
        assert.isUndefined(notExactly(numbers(first), 0, first.length - 1), `C's first run from ${topic}`)
        const resumed = second[0]?.number ?? sent
        assert.isUndefined(notExactly(numbers(second), resumed, sent - 1), `C's second run from ${topic}`)
        const lastFirst = first.length - 1
        assert.isAtMost(
          resumed,
          lastFirst + 1,
          `C lost ${topic} ${lastFirst + 1}..${resumed - 1} between its runs`
        )
        assert.isBelow(
          lastFirst + 1 - resumed,
          MAX_REPEATED,
          `C's second run repeated ${lastFirst + 1 - resumed} of ${topic}`
        )
        const before = oneStream(first, `C's first run from ${topic}`)
        const after = oneStream(second, `C's second run from ${topic}`)
        assert.strictEqual(before, after, `${topic}'s one incarnation in both of C's runs`)
      }
    }),
  120_000
)
