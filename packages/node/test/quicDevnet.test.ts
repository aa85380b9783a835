// `hotstuff2-net devnet --transport quic`: four validators over QUIC (experimental transport) as real
// processes, from the TypeScript sources through tsx like the other CLI tests. Their views advance,
// each connects to the three others, and every process exits 0.
import { spawn } from "node:child_process"
import { fileURLToPath } from "node:url"
import { assert, describe, it } from "@effect/vitest"
import * as Effect from "effect/Effect"

const PACKAGE = fileURLToPath(new URL("..", import.meta.url))
const ENTRY = ["--import", "tsx", "--conditions=@hotstuff2/source", "src/cli/main.ts"]

interface Summary {
  readonly ok: boolean
  readonly validators: number
  readonly transport: string
  readonly nodes: ReadonlyArray<{
    readonly index: number
    readonly view: number
    readonly exitCode: number | null
  }>
  readonly totals: { readonly certificates: number }
}

/** Runs the CLI to its end (killed past `limitMs`, a guard against a hang, never a measurement). */
const runCli = (args: ReadonlyArray<string>, limitMs: number) =>
  Effect.async<{ code: number | null; stdout: string; stderr: string }>((resume) => {
    const child = spawn(process.execPath, [...ENTRY, ...args], {
      cwd: PACKAGE,
      env: { ...process.env, NO_COLOR: "1" },
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
    const guard = setTimeout(() => child.kill("SIGKILL"), limitMs)
    child.on("close", (code) => {
      clearTimeout(guard)
      resume(Effect.succeed({ code, stdout, stderr }))
    })
    return Effect.sync(() => {
      clearTimeout(guard)
      child.kill("SIGKILL")
    })
  })

describe("hotstuff2-net devnet over QUIC", () => {
  it.live(
    "four QUIC validators connect to each other, advance their views and exit 0",
    () =>
      Effect.gen(function* () {
        const result = yield* runCli(
          ["devnet", "--validators", "4", "--transport", "quic", "--duration", "5s"],
          150_000
        )
        assert.strictEqual(result.code, 0, `${result.stdout}\n${result.stderr}`)
        const lines = result.stdout.trim().split("\n")
        const { summary } = JSON.parse(lines[lines.length - 1]!) as { summary: Summary }
        assert.isTrue(summary.ok)
        assert.strictEqual(summary.transport, "quic")
        assert.strictEqual(summary.nodes.length, 4)
        for (const node of summary.nodes) {
          assert.isAtLeast(node.view, 3, `validator ${node.index} reached view ${node.view}`)
          assert.strictEqual(node.exitCode, 0)
          assert.match(result.stdout, new RegExp(`^v${node.index} [0-9a-f]{8} +running .* 3/3 `, "m"))
        }
        assert.isAbove(summary.totals.certificates, 0)
        assert.include(result.stdout, "devnet summary: 4 validators over quic")
      }),
    { timeout: 180_000 }
  )
})
