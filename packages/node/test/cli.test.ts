// The hotstuff2-net command line as a real process (the TypeScript sources through tsx, as the other
// tests run on `src`): keygen, run with a bad and a good config, --log-level anywhere, and a devnet
// whose views advance.
import * as fs from "node:fs/promises"
import * as net from "node:net"
import * as os from "node:os"
import * as path from "node:path"
import { assert, describe, it } from "@effect/vitest"
import { Identity } from "@hotstuff2/wire"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as LogLevel from "effect/LogLevel"
import * as Option from "effect/Option"
import * as Schedule from "effect/Schedule"
import { takeLogLevel } from "../src/cli/commands.js"
import { reservePorts } from "../src/internal/ports.js"
import { runCli, start } from "./fixtures/cli.js"
import { peerId, seedOf } from "./fixtures/cluster.js"

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

/** Sends bytes that are not TLS to `port` on 127.0.0.1, and hangs up; connection errors are ignored. */
const pokeWithGarbage = (port: number) =>
  Effect.async<void>((resume) => {
    const socket = net.connect(port, "127.0.0.1", () => socket.end("not a TLS handshake\n"))
    socket.on("error", () => resume(Effect.void))
    socket.on("close", () => resume(Effect.void))
    return Effect.sync(() => socket.destroy())
  })

describe("takeLogLevel", () => {
  const argv = (...args: ReadonlyArray<string>) => ["node", "hotstuff2-net", ...args]

  it("takes --log-level out wherever it stands before --, the last one winning", () => {
    for (const [args, rest, level] of [
      [argv("--log-level", "debug", "run", "--config", "f"), argv("run", "--config", "f"), LogLevel.Debug],
      [
        argv("run", "--config", "f", "--drive", "--log-level", "warning"),
        argv("run", "--config", "f", "--drive"),
        LogLevel.Warning
      ],
      [argv("run", "--log-level=ERROR", "--config", "f"), argv("run", "--config", "f"), LogLevel.Error],
      [argv("--log-level", "info", "run", "--log-level", "trace"), argv("run"), LogLevel.Trace],
      [argv("run", "--", "--log-level", "debug"), argv("run", "--", "--log-level", "debug"), undefined]
    ] as const) {
      const taken = Either.getOrThrow(takeLogLevel(args))
      assert.deepStrictEqual(taken.args, rest)
      assert.deepStrictEqual(Option.getOrUndefined(taken.level), level)
    }
  })

  it("refuses a missing or unknown level, naming the levels", () => {
    for (const args of [argv("run", "--log-level", "loud"), argv("run", "--log-level")]) {
      const taken = takeLogLevel(args)
      assert.isTrue(Either.isLeft(taken))
      if (Either.isLeft(taken)) assert.strictEqual(taken.left._tag, "InvalidValue")
    }
  })
})

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

  const placements: ReadonlyArray<readonly [string, (config: string) => ReadonlyArray<string>]> = [
    [
      "after run's options",
      (config) => ["run", "--config", config, "--status-interval", "100ms", "--log-level", "warning"]
    ],
    [
      "before the subcommand",
      (config) => ["--log-level=warning", "run", "--config", config, "--status-interval", "100ms"]
    ]
  ]
  for (const [where, argsFor] of placements) {
    it.live(
      `run takes --log-level ${where}: at warning it logs a refused connection, not its info lines`,
      () =>
        Effect.scoped(
          Effect.gen(function* () {
            const [port] = yield* reservePorts(1)
            const file = path.join(yield* tempDir, "node.json")
            yield* Effect.promise(() => fs.writeFile(file, JSON.stringify(nodeConfig(`127.0.0.1:${port}`))))
            const running = yield* start(argsFor(file))
            yield* Effect.suspend(() =>
              running.child.exitCode !== null
                ? Effect.die(new Error(`exited ${running.child.exitCode}:\n${running.output()}`))
                : Effect.zipRight(
                    pokeWithGarbage(port!),
                    /inbound connection refused/.test(running.output()) ? Effect.void : Effect.fail("not yet")
                  )
            ).pipe(
              Effect.retry({ schedule: Schedule.spaced("200 millis"), times: 300 }),
              Effect.orElse(() =>
                Effect.fail(new Error(`no refusal logged within 60 s:\n${running.output()}`))
              )
            )
            running.child.kill("SIGTERM")
            const result = yield* running.finished.pipe(
              Effect.timeoutFail({
                duration: "30 seconds",
                onTimeout: () => new Error("still running 30 s after SIGTERM")
              })
            )
            const output = result.stdout + result.stderr
            assert.strictEqual(result.code, 0, output)
            assert.match(output, /WARN .*inbound connection refused/)
            assert.notInclude(output, "INFO")
            assert.notInclude(output, "listening on")
            assert.notInclude(output, "closing the network")
          })
        )
    )
  }

  it.live("run refuses an unknown --log-level after its options, naming the levels", () =>
    Effect.scoped(
      Effect.gen(function* () {
        const file = path.join(yield* tempDir, "node.json")
        yield* Effect.promise(() => fs.writeFile(file, JSON.stringify(nodeConfig("127.0.0.1:0"))))
        const result = yield* runCli(["run", "--config", file, "--log-level", "loud"])
        assert.strictEqual(result.code, 1)
        assert.include(
          result.stderr,
          `--log-level: expected one of all, trace, debug, info, warning, error, fatal, none, got "loud"`
        )
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
