// The devnet runner as `npm start` runs it (its exported `run`, which forks real validator processes
// over TLS on 127.0.0.1), for a few seconds: every validator commits, and the summary reads every
// ledger back and says they committed the same chain. The chain comparison itself on made-up chains.
import { assert, describe, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import { agreement } from "../src/devnet/chain.js"
import { run } from "../src/devnet/Devnet.js"

describe("devnet", () => {
  it.live(
    "4 validators over TLS commit blocks, and the summary says all of them committed the same chain",
    () =>
      Effect.gen(function* () {
        let out = ""
        let log = ""
        const result = yield* run({
          validators: 4,
          duration: "4 seconds",
          statusInterval: 500,
          // Four processes compiling the sources through tsx beside other suites: a generous deadline.
          startTimeout: "150 seconds",
          tty: false,
          handleSignals: false,
          write: (text) => {
            out += text
          },
          log: (text) => {
            log += text
          }
        }).pipe(Effect.mapError((e) => new Error(`${e.message}\n${out}\n${log}`)))
        assert.deepStrictEqual(result.failures, [])
        assert.strictEqual(result.agreement._tag, "Agree", out)
        assert.isAbove(result.agreement.height, 0, out)
        for (const v of result.validators) {
          assert.isAbove(v.committedHeight, 0, `v${v.index} committed nothing\n${out}`)
          assert.strictEqual(v.state, "exited", `v${v.index} did not stop cleanly\n${out}`)
        }
        const hash = result.agreement._tag === "Agree" ? result.agreement.hash : undefined
        assert.include(
          out,
          `all 4 validators committed the same chain up to height ${result.agreement.height} (hash ${hash})`
        )
        // The table and the summary list every validator.
        for (let i = 0; i < 4; i++) assert.match(out, new RegExp(`v${i} [0-9a-f]{8}  committed height [1-9]`))
      }),
    240_000
  )

  it("finds the common prefix and its hash when every validator holds the same blocks", () => {
    const a = agreement([
      { index: 0, hashes: ["aa", "bb", "cc"] },
      { index: 1, hashes: ["aa", "bb"] },
      { index: 2, hashes: ["aa", "bb", "cc", "dd"] }
    ])
    assert.deepStrictEqual(a, { _tag: "Agree", height: 2, hash: "bb", heights: [3, 2, 4] })
  })

  it("names the lowest height where two validators hold different blocks, also above the common prefix", () => {
    assert.deepStrictEqual(
      agreement([
        { index: 0, hashes: ["aa", "bb", "cc"] },
        { index: 1, hashes: ["aa"] },
        { index: 2, hashes: ["aa", "bb", "ee"] }
      ]),
      {
        _tag: "Differ",
        height: 3,
        holders: [
          { hash: "cc", validators: [0] },
          { hash: "ee", validators: [2] }
        ],
        heights: [3, 1, 3]
      }
    )
  })
})
