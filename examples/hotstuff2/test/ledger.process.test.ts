// A real process appending to a ledger, killed with SIGKILL mid-run: every append it reported as
// done is there after a reopen, and the ledger takes appends again. SIGKILL keeps the page cache, so
// this proves the log's recovery after an abrupt stop, not the fsync (a power cut would be needed).
import { spawn } from "node:child_process"
import { fileURLToPath } from "node:url"
import { assert, it } from "@effect/vitest"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Ledger from "../src/Ledger.js"
import { chain, comparable, tempDirectory } from "./fixtures/ledger.js"

/** examples/hotstuff2: the child's working directory. */
const PACKAGE = fileURLToPath(new URL("..", import.meta.url))
/** Heights the child must report before it is killed. */
const KILL_AFTER = 150

it.scopedLive(
  "keeps every append a killed process reported as done, and appends again after it",
  () =>
    Effect.gen(function* () {
      const directory = yield* tempDirectory
      const reported = yield* Deferred.make<bigint, Error>()
      let last = 0n
      let stderr = ""
      const child = yield* Effect.acquireRelease(
        Effect.sync(() =>
          spawn(
            process.execPath,
            [
              "--import",
              "tsx",
              "--conditions=@hotstuff2/source",
              "test/fixtures/ledgerAppender.ts",
              directory
            ],
            { cwd: PACKAGE, env: { ...process.env, NO_COLOR: "1" }, stdio: ["ignore", "pipe", "pipe"] }
          )
        ),
        (c) => Effect.sync(() => c.exitCode === null && c.signalCode === null && c.kill("SIGKILL"))
      )
      let partial = ""
      child.stdout.on("data", (chunk: Buffer) => {
        const lines = (partial + chunk.toString("utf8")).split("\n")
        partial = lines.pop() ?? ""
        for (const line of lines) last = BigInt(line)
        if (last >= KILL_AFTER) {
          child.kill("SIGKILL")
          Deferred.unsafeDone(reported, Effect.succeed(last))
        }
      })
      child.stderr.on("data", (chunk: Buffer) => {
        stderr += chunk.toString("utf8")
      })
      const exited = yield* Deferred.make<NodeJS.Signals | null>()
      child.on("exit", (code, signal) => {
        Deferred.unsafeDone(reported, Effect.fail(new Error(`child exited (${code}, ${signal}): ${stderr}`)))
        Deferred.unsafeDone(exited, Effect.succeed(signal))
      })
      yield* Deferred.await(reported)
      assert.strictEqual(yield* Deferred.await(exited), "SIGKILL")
      // Lines read after the kill was sent are reported appends too.
      const durable = last

      yield* Effect.scoped(
        Effect.gen(function* () {
          const ledger = yield* Ledger.open({ dataDirectory: directory })
          const height = yield* ledger.height
          assert.isAtLeast(Number(height), Number(durable))
          const blocks = yield* ledger.readRange(1n, Number(height), Number.MAX_SAFE_INTEGER)
          const expected = chain(1n, Number(height), { payloadBytes: (h) => Number(h % 200n) * 50 })
          assert.deepStrictEqual(blocks.map(comparable), expected.map(comparable))
          yield* ledger.append(chain(height + 1n, 1))
          assert.strictEqual(yield* ledger.height, height + 1n)
        })
      )
    }).pipe(
      Effect.timeoutFail({ duration: "60 seconds", onTimeout: () => new Error("no kill within 60 s") })
    ),
  90_000
)
