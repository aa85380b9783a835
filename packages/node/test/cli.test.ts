// The hotstuff2-net command line as a real process (the TypeScript sources through tsx, as the other
// tests run on `src`): keygen, run with a bad and a good config, and a devnet whose views advance.
import { type ChildProcess, spawn } from "node:child_process"
import * as fs from "node:fs/promises"
import * as os from "node:os"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import { assert, describe, it } from "@effect/vitest"
import { Identity } from "@hotstuff2/wire"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Schedule from "effect/Schedule"
import { peerId, seedOf } from "./fixtures/cluster.js"

const PACKAGE = fileURLToPath(new URL("..", import.meta.url))
const ENTRY = ["--import", "tsx", "--conditions=@hotstuff2/source", "src/cli/main.ts"]

interface Finished {
  readonly code: number | null
  readonly signal: NodeJS.Signals | null
  readonly stdout: string
  readonly stderr: string
}

interface Running {
  readonly child: ChildProcess
  readonly output: () => string
  readonly finished: Effect.Effect<Finished>
}

/** Starts `hotstuff2-net args`; the scope's end kills it if it is still running. */
const start = (args: ReadonlyArray<string>, env: Readonly<Record<string, string>> = {}) =>
  Effect.acquireRelease(
    Effect.gen(function* () {
      const done = yield* Deferred.make<Finished>()
      const child = spawn(process.execPath, [...ENTRY, ...args], {
        cwd: PACKAGE,
        env: { ...process.env, NO_COLOR: "1", ...env },
        stdio: ["ignore", "pipe", "pipe"]
      })
      let stdout = ""
      let stderr = ""
      child.stdout.on("data", (chunk: Buffer) => {
        stdout += chunk.toString("utf8")
      })
      child.stderr.on("data", (chunk: Buffer) => {
        stderr += chunk.toString("utf8")
      })
      child.on("close", (code, signal) =>
        Deferred.unsafeDone(done, Effect.succeed({ code, signal, stdout, stderr }))
      )
      return { child, output: () => stdout + stderr, finished: Deferred.await(done) } satisfies Running
    }),
    (running) => Effect.sync(() => running.child.exitCode === null && running.child.kill("SIGKILL"))
  )

/** Runs `hotstuff2-net args` to its end, within `limit`. */
const runCli = (
  args: ReadonlyArray<string>,
  { env = {}, limit = "60 seconds" }: { env?: Record<string, string>; limit?: Duration.DurationInput } = {}
) =>
  Effect.scoped(
    Effect.flatMap(start(args, env), (running) =>
      running.finished.pipe(
        Effect.timeoutFail({
          duration: limit,
          onTimeout: () =>
            new Error(`hotstuff2-net ${args.join(" ")} still running after ${Duration.format(limit)}`)
        })
      )
    )
  )

/** Validator 0 of the test set, alone: nobody to dial. */
const nodeConfig = (listen: string) => ({
  identity: { seed: seedOf(0) },
  listen,
  networkId: "hotstuff2-cli-test",
  validators: [{ id: peerId(0), addresses: [listen] }]
})

const tempDir = Effect.acquireRelease(
  Effect.promise(() => fs.mkdtemp(path.join(os.tmpdir(), "hotstuff2-cli-"))),
  (dir) => Effect.promise(() => fs.rm(dir, { recursive: true, force: true }))
)

describe("hotstuff2-net", () => {
  it.live("keygen writes a 0600 key file, prints its PeerId, and refuses to overwrite it", () =>
    Effect.scoped(
      Effect.gen(function* () {
        const file = path.join(yield* tempDir, "validator.key")
        const first = yield* runCli(["keygen", "--out", file])
        assert.strictEqual(first.code, 0, first.stderr)
        const printed = first.stdout.trim()
        assert.match(printed, /^[0-9a-f]{64}$/)
        const stat = yield* Effect.promise(() => fs.stat(file))
        assert.strictEqual(stat.mode & 0o777, 0o600)
        assert.strictEqual((yield* Identity.load(file)).peerId, printed)

        const pem = yield* Effect.promise(() => fs.readFile(file, "utf8"))
        const second = yield* runCli(["keygen", "--out", file])
        assert.notStrictEqual(second.code, 0)
        assert.include(second.stderr, "refusing to overwrite")
        assert.strictEqual(yield* Effect.promise(() => fs.readFile(file, "utf8")), pem)
      })
    )
  )

  it.live(
    "run with a bad config exits 1 naming the field and its form, from the file or the environment",
    () =>
      Effect.scoped(
        Effect.gen(function* () {
          const file = path.join(yield* tempDir, "node.json")
          yield* Effect.promise(() =>
            fs.writeFile(file, JSON.stringify({ ...nodeConfig("127.0.0.1:0"), listen: "nowhere" }))
          )
          const bad = yield* runCli(["run", "--config", file])
          assert.strictEqual(bad.code, 1)
          assert.include(bad.stderr, "hotstuff2-net: node config listen: expected host:port")

          yield* Effect.promise(() => fs.writeFile(file, JSON.stringify(nodeConfig("127.0.0.1:0"))))
          const badEnv = yield* runCli(["run", "--config", file], {
            env: { HOTSTUFF2_NETWORK_ID: "no spaces allowed" }
          })
          assert.strictEqual(badEnv.code, 1)
          assert.include(badEnv.stderr, "hotstuff2-net: node config networkId: expected 1 to 64 characters")
        })
      )
  )

  it.live("run starts a node from its config, logs where it listens, and closes cleanly on SIGTERM", () =>
    Effect.scoped(
      Effect.gen(function* () {
        const file = path.join(yield* tempDir, "node.json")
        yield* Effect.promise(() => fs.writeFile(file, JSON.stringify(nodeConfig("127.0.0.1:0"))))
        const running = yield* start(["run", "--config", file, "--status-interval", "200ms"], {})
        yield* Effect.suspend(() =>
          /status: 0\/0 peers connected/.test(running.output()) ? Effect.void : Effect.fail("not yet")
        ).pipe(
          Effect.retry({ schedule: Schedule.spaced("100 millis"), times: 600 }),
          Effect.orElse(() => Effect.fail(new Error(`no status line within 60 s:\n${running.output()}`)))
        )
        assert.match(
          running.output(),
          new RegExp(`node ${peerId(0)} listening on 127\\.0\\.0\\.1:\\d+ \\(tls`)
        )
        running.child.kill("SIGTERM")
        const result = yield* running.finished.pipe(
          Effect.timeoutFail({
            duration: "30 seconds",
            onTimeout: () => new Error("still running 30 s after SIGTERM")
          })
        )
        assert.strictEqual(result.code, 0, result.stdout + result.stderr)
        assert.include(result.stdout + result.stderr, "closing the network")
      })
    )
  )

  it.live(
    "devnet: four TLS validators advance their views, report a JSON summary and exit 0",
    () =>
      Effect.gen(function* () {
        const result = yield* runCli(
          ["devnet", "--validators", "4", "--transport", "tls", "--duration", "5s"],
          {
            limit: "150 seconds"
          }
        )
        const lines = result.stdout.trim().split("\n")
        assert.strictEqual(result.code, 0, `${result.stdout}\n${result.stderr}`)
        const { summary } = JSON.parse(lines[lines.length - 1]!) as { summary: Summary }
        assert.isTrue(summary.ok)
        assert.strictEqual(summary.validators, 4)
        assert.isAtLeast(summary.seconds, 4.5)
        assert.strictEqual(summary.nodes.length, 4)
        for (const node of summary.nodes) {
          assert.isAtLeast(node.view, 3, `validator ${node.index} reached view ${node.view}`)
          assert.strictEqual(node.exitCode, 0)
          assert.isFalse(node.killed)
          assert.strictEqual(node.rejected, 0)
          // The live table (plain lines: stdout is not a terminal) showed it connected to the other three.
          assert.match(result.stdout, new RegExp(`^v${node.index} [0-9a-f]{8} +running .* 3/3 `, "m"))
        }
        assert.isAbove(summary.totals.certificates, 0)
        assert.isAbove(summary.totals.bytesOut, 0)
        assert.include(result.stdout, "devnet summary: 4 validators over tls")
      }),
    { timeout: 180_000 }
  )
})

interface Summary {
  readonly ok: boolean
  readonly validators: number
  readonly seconds: number
  readonly nodes: ReadonlyArray<{
    readonly index: number
    readonly view: number
    readonly exitCode: number | null
    readonly killed: boolean
    readonly rejected: number
    readonly peersConnected: number
  }>
  readonly totals: { readonly certificates: number; readonly bytesOut: number }
}
