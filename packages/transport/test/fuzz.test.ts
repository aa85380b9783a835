// Fuzz, bounded: the handshake's Hello and Goodbye decoders each get FUZZ_CASES random and mutated
// inputs (default 10^5; `npm run fuzz` runs 10^6) through the shared engine, seeded. Nothing may
// throw, a bad input is refused (undefined), the targets' properties must hold (well-formed fields,
// canonical re-encoding), and the run must reach every outcome (test/fuzz/targets.ts).
import { assert, describe, it } from "@effect/vitest"
import { Fuzz } from "@hotstuff2/testing"
import { targets } from "./fuzz/targets.js"

const { cases: CASES, seed: SEED } = Fuzz.settings({ cases: 100_000 })
/** Bounded work, not a timing check: room for a loaded 2-core CI machine. */
const TEST_TIMEOUT_MS = 180_000
/**
 * The loop stops here, well before the test's timeout, so that a run that is too slow (or a decoder
 * that got slow) fails with how far it got, instead of being cut by the runner.
 */
const HANG_GUARD_MS = TEST_TIMEOUT_MS * 0.8

describe("fuzz", () => {
  for (const target of targets) {
    it(
      `${target.name}: ${CASES} random and mutated inputs: no throw, its properties hold, every outcome reached (seed ${SEED})`,
      () => {
        const report = Fuzz.run(target, { cases: CASES, seed: SEED, deadline: Date.now() + HANG_GUARD_MS })
        if (process.env.FUZZ_REPORT) console.log(JSON.stringify(report))
        assert.deepStrictEqual(Fuzz.problems(report), [])
        assert.strictEqual(report.cases, CASES)
      },
      TEST_TIMEOUT_MS
    )
  }
})
