// Fuzz, bounded: the frame decoder, the message codec and the envelope each get FUZZ_CASES random and
// mutated inputs (default 10^5; `npm run fuzz` runs 10^6) through the shared engine, seeded. Nothing
// may throw, every failure must be a typed error, the targets' properties must hold (canonical
// re-encoding, agreement with the reference decoders), and the run must reach the failure paths.
import { describe, it } from "@effect/vitest"
import { Fuzz } from "@hotstuff2/testing"
import { targets } from "./fuzz/targets.js"

Fuzz.suite(targets, { describe, it })
