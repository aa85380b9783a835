// The fuzz engine of @hotstuff2/testing (which has no test runner of its own), on a planted decoder:
// a throw is a crash finding that replays from its seed and case, allocations made while the decoder
// runs are measured, and the allocators are given back after a run.
import { assert, describe, it } from "@effect/vitest"
import { Fuzz } from "@hotstuff2/testing"

const MiB = 1024 * 1024

/** Throws on a 0xff third byte; allocates 1 MiB on a 0x80 first byte. */
const planted: Fuzz.Target = {
  name: "planted",
  seeds: [Uint8Array.of(1, 2, 3, 4, 5, 6, 7, 8)],
  expected: ["short", "long"],
  run: (input) => {
    if (input.length > 3 && input[2] === 0xff) throw new RangeError("planted")
    if (input[0] === 0x80) Buffer.alloc(MiB)
    return { label: input.length > 8 ? "long" : "short", output: input }
  }
}

describe("fuzz engine", () => {
  it("reports a throw as a crash with its input, and replays that case alone from the seed", () => {
    const report = Fuzz.run(planted, { cases: 5000, seed: 1 })
    assert.isAbove(report.crashes, 0)
    const finding = report.findings[0]!
    assert.strictEqual(finding.kind, "crash")
    assert.include(finding.error, "RangeError: planted")
    assert.strictEqual(finding.inputHex.slice(4, 6), "ff")
    assert.isNotEmpty(Fuzz.problems(report))
    const replay = Fuzz.run(planted, { cases: 1, seed: 1, only: finding.case })
    assert.strictEqual(replay.crashes, 1)
    assert.strictEqual(replay.findings[0]!.inputHex, finding.inputHex)
  })

  it("in slices with the event loop turning between them: the same cases and counts as one stretch", async () => {
    const whole = Fuzz.run(planted, { cases: 7000, seed: 3 })
    let turns = 0
    const ticking = setInterval(() => turns++, 0)
    const sliced = await Fuzz.runSliced(planted, { cases: 7000, seed: 3 })
    clearInterval(ticking)
    assert.strictEqual(sliced.cases, 7000)
    assert.deepStrictEqual(sliced.outcomes, whole.outcomes)
    assert.strictEqual(sliced.crashes, whole.crashes)
    assert.deepStrictEqual(
      sliced.findings.map((f) => f.case),
      whole.findings.map((f) => f.case)
    )
    assert.deepStrictEqual(sliced.missing, whole.missing)
    // Timers ran between the slices: the process was not held for the whole run.
    assert.isAbove(turns, 0)
  })

  it("gives the same cases for the same seed, and other cases for another", () => {
    const a = Fuzz.run(planted, { cases: 2000, seed: 7 })
    const b = Fuzz.run(planted, { cases: 2000, seed: 7 })
    const c = Fuzz.run(planted, { cases: 2000, seed: 8 })
    assert.deepStrictEqual(a.outcomes, b.outcomes)
    const inputs = (r: Fuzz.Report) => r.findings.map((f) => [f.case, f.inputHex])
    assert.deepStrictEqual(inputs(a), inputs(b))
    assert.notDeepEqual(a.outcomes, c.outcomes)
  })

  it("measures the largest allocation made while the decoder runs, and what it returned", () => {
    const report = Fuzz.run(planted, { cases: 5000, seed: 1 })
    assert.strictEqual(report.largestAllocation.bytes, MiB)
    assert.isAbove(report.largestOutput.bytes, 8)
    const unmetered = Fuzz.run(planted, { cases: 5000, seed: 1, meter: false })
    assert.strictEqual(unmetered.largestAllocation.bytes, 0)
    assert.deepStrictEqual(unmetered.outcomes, report.outcomes)
  })

  it("gives the allocators back after a run", () => {
    const before = [globalThis.Uint8Array, globalThis.ArrayBuffer, Buffer.alloc, Buffer.allocUnsafe]
    Fuzz.run(planted, { cases: 100, seed: 1 })
    assert.deepStrictEqual(
      [globalThis.Uint8Array, globalThis.ArrayBuffer, Buffer.alloc, Buffer.allocUnsafe],
      before
    )
  })
})
