// Fuzz, bounded: the handshake's Hello and Goodbye decoders each get FUZZ_CASES random and mutated
// inputs (default 10^5; `npm run fuzz` runs 10^6) through the shared engine, seeded. Nothing may
// throw, a bad input is refused (undefined), the targets' properties must hold (well-formed fields,
// canonical re-encoding), and the run must reach every outcome (test/fuzz/targets.ts).
import { describe, it } from "@effect/vitest"
import { Fuzz } from "@hotstuff2/testing"
import { targets } from "./fuzz/targets.js"

Fuzz.suite(targets, { describe, it })
