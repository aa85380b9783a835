// `hotstuff2-net devnet --transport quic`: four validators over QUIC (experimental transport) as real
// processes, from the TypeScript sources through tsx like the other CLI tests. Their views advance,
// each connects to the three others, and every process exits 0.
import { assert, describe, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import { runCli } from "./fixtures/cli.js"

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

describe("hotstuff2-net devnet over QUIC", () => {
  it.live(
    "four QUIC validators connect to each other, advance their views and exit 0",
    () =>
      Effect.gen(function* () {
        // The limit guards against a hang; it measures nothing.
        const result = yield* runCli(
          ["devnet", "--validators", "4", "--transport", "quic", "--duration", "5s"],
          {
            limit: "150 seconds"
          }
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
