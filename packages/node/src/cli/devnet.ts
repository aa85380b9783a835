// `devnet`: N validator processes on 127.0.0.1, each running NodeNetwork and the consensus traffic
// driver, forked from this process with an IPC channel; a live table while they run, a summary
// (human lines, then one JSON line) when the duration ends or on Ctrl-C.
import { type ChildProcess, fork } from "node:child_process"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import { Identity } from "@hotstuff2/wire"
import * as Clock from "effect/Clock"
import * as Data from "effect/Data"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Option from "effect/Option"
import * as Schedule from "effect/Schedule"
import { reservePorts } from "../internal/ports.js"
import type { NodeConfigInput } from "../NodeConfig.js"
import type { FromValidator, Snapshot, ToValidator, ValidatorSetup } from "./protocol.js"
import * as Table from "./table.js"

export interface DevnetOptions {
  readonly validators: number
  readonly transport: "tls" | "tcp" | "quic"
  /** How long the validators run once all of them are up. */
  readonly duration: Duration.Duration
  readonly payloadBytes: number
  /** Validator i listens on basePort + i; none: free ports picked by the OS. */
  readonly basePort: Option.Option<number>
  readonly viewTimeout: Duration.Duration
  readonly minViewTime: Duration.Duration
}

/** The devnet could not start, or a validator failed while it ran. */
export class DevnetFailed extends Data.TaggedError("DevnetFailed")<{ readonly reason: string }> {
  override get message() {
    return `devnet failed: ${this.reason}`
  }
}

/** The network id of every devnet. */
export const NETWORK_ID = "hotstuff2-devnet"
/** Validators report this often. */
const STATS_INTERVAL = Duration.millis(500)
/** Every validator must be up within this. */
const START_TIMEOUT = Duration.seconds(60)
/** A validator asked to stop that has not exited after this is killed. */
const STOP_TIMEOUT = Duration.seconds(10)
/** The live table redraws this often on a terminal, and prints this often otherwise. */
const REDRAW_TTY = Duration.millis(500)
const REDRAW_PLAIN = Duration.seconds(2)
const OUTPUT_TAIL = 40

/** The validator entry beside this module: `validator.js` compiled, `validator.ts` under tsx. */
const validatorEntry = (): string => {
  const here = fileURLToPath(import.meta.url)
  return path.join(path.dirname(here), `validator${path.extname(here)}`)
}

interface Child {
  readonly index: number
  readonly process: ChildProcess
  readonly ready: Deferred.Deferred<void>
  readonly exited: Deferred.Deferred<void>
  peerId: string | undefined
  state: "starting" | "running" | "stopping" | "exited" | "failed"
  previous: Snapshot | undefined
  latest: Snapshot | undefined
  rates: Table.Rates
  output: Array<string>
  exit: { code: number | null; signal: string | null } | undefined
  killed: boolean
}

export const configsFor = (
  identities: ReadonlyArray<Identity.Identity>,
  ports: ReadonlyArray<number>,
  transport: "tls" | "tcp" | "quic"
): ReadonlyArray<NodeConfigInput> => {
  const addresses = ports.map((port) => `127.0.0.1:${port}`)
  return identities.map((identity, i) => ({
    identity: { seed: Buffer.from(Identity.seed(identity)).toString("hex") },
    listen: addresses[i]!,
    transport,
    allowUnencrypted: transport === "tcp",
    networkId: NETWORK_ID,
    validators: identities.map((v, j) => ({ id: v.peerId, addresses: [addresses[j]!] })),
    // Every validator shares 127.0.0.1; heartbeats twice a second keep the RTT column fresh.
    limits: { maxConnectionsPerIp: 4 * identities.length + 16, handshakeTimeout: 2000 },
    peers: { heartbeatInterval: 500 },
    // One machine: loopback records are fine, and gossip runs at a devnet's pace.
    discovery: { allowLoopback: true, gossipInterval: "5 seconds" }
  }))
}

const write = (text: string) => Effect.sync(() => void process.stdout.write(text))

export const devnet = (options: DevnetOptions) =>
  Effect.gen(function* () {
    const n = options.validators
    if (!Number.isInteger(n) || n < 1 || n > 128) {
      return yield* new DevnetFailed({ reason: `--validators must be 1 to 128, got ${n}` })
    }
    const base = options.basePort
    const ports = Option.isSome(base)
      ? Array.from({ length: n }, (_, i) => base.value + i)
      : yield* reservePorts(n)
    if (ports.some((p) => p < 1 || p > 65535)) {
      return yield* new DevnetFailed({ reason: `ports ${ports[0]}..${ports[n - 1]} are not all valid` })
    }
    const identities = yield* Effect.forEach(ports, () => Identity.generate)
    const configs = configsFor(identities, ports, options.transport)
    const children: Array<Child> = []
    const failure = yield* Deferred.make<never, DevnetFailed>()
    const failures: Array<string> = []
    const fail = (reason: string) => {
      failures.push(reason)
      Deferred.unsafeDone(failure, Exit.fail(new DevnetFailed({ reason })))
    }
    let stopping = false
    let startedAt: number | undefined
    let stoppedAt: number | undefined
    const tty = process.stdout.isTTY === true

    const spawn = (index: number): Effect.Effect<Child> =>
      Effect.gen(function* () {
        const child: Child = {
          index,
          process: fork(validatorEntry(), [], {
            execArgv: process.execArgv,
            stdio: ["ignore", "pipe", "pipe", "ipc"],
            serialization: "json"
          }),
          ready: yield* Deferred.make<void>(),
          exited: yield* Deferred.make<void>(),
          peerId: undefined,
          state: "starting",
          previous: undefined,
          latest: undefined,
          rates: Table.zeroRates,
          output: [],
          exit: undefined,
          killed: false
        }
        const keep = (chunk: Buffer) => {
          for (const line of chunk.toString("utf8").split("\n")) {
            if (line.trim() === "") continue
            child.output.push(line)
            if (child.output.length > OUTPUT_TAIL) child.output.shift()
          }
        }
        child.process.stdout?.on("data", keep)
        child.process.stderr?.on("data", keep)
        child.process.on("message", (m: FromValidator) => {
          switch (m.type) {
            case "ready":
              child.peerId = m.peerId
              child.state = stopping ? "stopping" : "running"
              Deferred.unsafeDone(child.ready, Exit.void)
              return
            case "stats":
              if (child.latest !== undefined) {
                child.previous = child.latest
                child.rates = Table.rates(child.latest, m.snapshot)
              }
              child.latest = m.snapshot
              return
            case "failed":
              child.state = "failed"
              fail(`validator ${index}: ${m.message}`)
              return
          }
        })
        child.process.on("error", (e) => {
          // Telling a validator that has just exited to stop fails; its exit is judged below.
          if (!stopping) fail(`validator ${index}: ${e.message}`)
        })
        child.process.on("exit", (code, signal) => {
          child.exit = { code, signal }
          if (child.state !== "failed") child.state = "exited"
          const asked =
            stopping && (code === 0 || child.killed || signal === "SIGINT" || signal === "SIGTERM")
          if (!asked) {
            fail(
              `validator ${index} exited (${signal ?? `code ${code}`}) ${stopping ? "while stopping" : "early"}`
            )
          }
          Deferred.unsafeDone(child.ready, Exit.void)
          Deferred.unsafeDone(child.exited, Exit.void)
        })
        const setup: ValidatorSetup = {
          index,
          config: configs[index]!,
          payloadBytes: options.payloadBytes,
          viewTimeoutMillis: Duration.toMillis(options.viewTimeout),
          minViewTimeMillis: Duration.toMillis(options.minViewTime),
          statsIntervalMillis: Duration.toMillis(STATS_INTERVAL)
        }
        child.process.send({ type: "start", setup } satisfies ToValidator)
        return child
      })

    const stop = (child: Child) =>
      Effect.gen(function* () {
        if (child.exit !== undefined) return
        if (child.state !== "failed") child.state = "stopping"
        try {
          if (child.process.connected) child.process.send({ type: "stop" } satisfies ToValidator)
        } catch {
          // already gone: the exit event follows
        }
        // Interruptible: this runs in a finalizer, where a timeout could not otherwise cut the wait.
        const exited = yield* Deferred.await(child.exited).pipe(
          Effect.interruptible,
          Effect.timeout(STOP_TIMEOUT),
          Effect.option
        )
        if (Option.isNone(exited)) {
          child.killed = true
          child.process.kill("SIGKILL")
          failures.push(
            `validator ${child.index} did not exit within ${Duration.format(STOP_TIMEOUT)}; killed`
          )
          yield* Deferred.await(child.exited).pipe(
            Effect.interruptible,
            Effect.timeout(Duration.seconds(2)),
            Effect.option
          )
        }
      })

    const stopAll = Effect.gen(function* () {
      stopping = true
      stoppedAt ??= yield* Clock.currentTimeMillis
      yield* Effect.forEach(children, stop, { concurrency: "unbounded", discard: true })
    })

    const rows = () =>
      children.map(
        (c): Table.Row => ({
          index: c.index,
          peerId: c.peerId,
          state: c.state,
          snapshot: c.latest,
          rates: c.rates,
          peers: n - 1
        })
      )

    let drawn = 0
    const redraw = Effect.gen(function* () {
      const now = yield* Clock.currentTimeMillis
      const elapsed = startedAt === undefined ? 0 : (now - startedAt) / 1000
      const lines = [
        `devnet ${n} x ${options.transport}  ${elapsed.toFixed(1)} s of ${Duration.format(options.duration)}`,
        Table.header(),
        ...rows().map(Table.row)
      ]
      if (tty) {
        const up = drawn > 0 ? `\x1b[${drawn}F\x1b[0J` : ""
        drawn = lines.length
        yield* write(`${up}${lines.join("\n")}\n`)
      } else {
        yield* write(`${lines.join("\n")}\n\n`)
      }
    })

    const body = Effect.gen(function* () {
      // Ctrl-C reaches the validators too (one process group): their exits are not failures.
      const onSignal = () => {
        stopping = true
      }
      yield* Effect.acquireRelease(
        Effect.sync(() => {
          process.on("SIGINT", onSignal)
          process.on("SIGTERM", onSignal)
        }),
        () =>
          Effect.sync(() => {
            process.off("SIGINT", onSignal)
            process.off("SIGTERM", onSignal)
          })
      )
      yield* Effect.acquireRelease(
        Effect.gen(function* () {
          for (let i = 0; i < n; i++) children.push(yield* spawn(i))
        }),
        () => stopAll
      )
      yield* write(
        `devnet: ${n} validators over ${options.transport} on 127.0.0.1:${ports.join(",")}, ` +
          `${options.payloadBytes} B payloads, ${Duration.format(options.duration)}\n`
      )
      const allReady = Effect.forEach(children, (c) => Deferred.await(c.ready), { discard: true })
      yield* Effect.raceFirst(allReady, Deferred.await(failure)).pipe(
        Effect.timeoutFail({
          duration: START_TIMEOUT,
          onTimeout: () =>
            new DevnetFailed({
              reason: `validators ${children
                .filter((c) => c.state === "starting")
                .map((c) => c.index)
                .join(", ")} not up within ${Duration.format(START_TIMEOUT)}`
            })
        })
      )
      startedAt = yield* Clock.currentTimeMillis
      yield* Effect.forkScoped(Effect.repeat(redraw, Schedule.spaced(tty ? REDRAW_TTY : REDRAW_PLAIN)))
      yield* Effect.raceFirst(Effect.sleep(options.duration), Deferred.await(failure))
    })

    yield* Effect.scoped(body).pipe(
      Effect.onExit((exit) =>
        Effect.gen(function* () {
          const now = yield* Clock.currentTimeMillis
          yield* summary({
            options,
            children,
            seconds: startedAt === undefined ? 0 : ((stoppedAt ?? now) - startedAt) / 1000,
            ok: failures.length === 0 && (Exit.isSuccess(exit) || Exit.isInterrupted(exit)),
            failures
          })
        })
      )
    )
    if (failures.length > 0) return yield* new DevnetFailed({ reason: failures.join("; ") })
  })

const summary = (run: {
  readonly options: DevnetOptions
  readonly children: ReadonlyArray<Child>
  readonly seconds: number
  readonly ok: boolean
  readonly failures: ReadonlyArray<string>
}) =>
  Effect.gen(function* () {
    const { children, seconds } = run
    const sum = (f: (s: Snapshot) => number) => children.reduce((a, c) => a + (c.latest ? f(c.latest) : 0), 0)
    const perSecond = (x: number) => (seconds > 0 ? x / seconds : 0)
    const totals = {
      proposals: sum((s) => s.proposalsSent),
      votes: sum((s) => s.votesSent),
      certificates: sum((s) => s.certificates),
      timeouts: sum((s) => s.timeouts),
      bytesIn: sum((s) => s.bytesIn),
      bytesOut: sum((s) => s.bytesOut),
      rejected: sum((s) => s.rejected),
      sendFailures: sum((s) => s.sendFailures)
    }
    const highest = Math.max(0, ...children.map((c) => c.latest?.view ?? 0))
    const rates = {
      views: perSecond(highest),
      proposals: perSecond(totals.proposals),
      votes: perSecond(totals.votes),
      bytesIn: perSecond(totals.bytesIn),
      bytesOut: perSecond(totals.bytesOut)
    }
    const lines = [
      "",
      `devnet summary: ${children.length} validators over ${run.options.transport}, ${seconds.toFixed(1)} s measured`,
      ...children.map((c) => {
        const s = c.latest
        const exit = c.exit === undefined ? "running" : (c.exit.signal ?? `exit ${c.exit.code}`)
        return s === undefined
          ? `  v${c.index} ${c.peerId?.slice(0, 8) ?? "--------"}  no report (${exit})`
          : `  v${c.index} ${c.peerId?.slice(0, 8)}  view ${s.view}  proposed ${s.proposalsSent}  ` +
              `voted ${s.votesSent}  certificates ${s.certificates}  timeouts ${s.timeouts}  ` +
              `in ${Table.bytes(s.bytesIn)}  out ${Table.bytes(s.bytesOut)}  (${exit}${c.killed ? ", killed" : ""})`
      }),
      `  total: ${totals.proposals} proposals, ${totals.votes} votes, ${totals.certificates} certificates, ` +
        `${totals.timeouts} timeouts, in ${Table.bytes(totals.bytesIn)}, out ${Table.bytes(totals.bytesOut)}`,
      `  rates: ${rates.views.toFixed(1)} views/s, ${rates.proposals.toFixed(1)} proposals/s, ` +
        `${rates.votes.toFixed(1)} votes/s, in ${Table.bytes(rates.bytesIn)}/s, out ${Table.bytes(rates.bytesOut)}/s`,
      ...run.failures.map((f) => `  failure: ${f}`)
    ]
    if (!run.ok) {
      for (const c of children) {
        if (c.state !== "failed" && c.exit?.code === 0) continue
        for (const line of c.output) lines.push(`  [v${c.index}] ${line}`)
      }
    }
    const json = {
      summary: {
        ok: run.ok,
        validators: children.length,
        transport: run.options.transport,
        payloadBytes: run.options.payloadBytes,
        seconds,
        nodes: children.map((c) => ({
          index: c.index,
          peerId: c.peerId ?? null,
          exitCode: c.exit?.code ?? null,
          signal: c.exit?.signal ?? null,
          killed: c.killed,
          ...(c.latest ?? {})
        })),
        totals,
        rates,
        failures: run.failures
      }
    }
    yield* write(`${lines.join("\n")}\n${JSON.stringify(json)}\n`)
  })
