// `npm run fuzz` for @hotstuff2/broadcast: every target of targets.ts, FUZZ_CASES cases each (default
// 10^6), one JSON line per target; exits non-zero on a crash or a violation. Env: FUZZ_SEED,
// FUZZ_ONLY (names, comma-separated), FUZZ_CASE (replay one case and print its input). Runs under
// --expose-gc (package.json), so that each line also says what the run retained after collections.
import { Fuzz } from "@hotstuff2/testing"
import { targets } from "./targets.js"

await Fuzz.main(targets)
