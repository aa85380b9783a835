// Fuzz, bounded: the broadcaster's reading of an inbound message slot (kind byte, then message or
// envelope) gets FUZZ_CASES random and mutated inputs (default 10^5; `npm run fuzz` runs 10^6) through
// the shared engine, seeded. Nothing may throw, every failure must be a refusal or a typed error, the
// parse must hand out views of the slot, and the run must reach every outcome (test/fuzz/targets.ts).
import { describe, it } from "@effect/vitest"
import { Fuzz } from "@hotstuff2/testing"
import { targets } from "./fuzz/targets.js"

Fuzz.suite(targets, { describe, it })
