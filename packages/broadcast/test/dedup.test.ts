import { assert, describe, it } from "@effect/vitest"
import * as fc from "effect/FastCheck"
import { Dedup } from "../src/internal/dedup.js"

describe("Dedup", () => {
  it("admits each (origin, sequence) once inside the window, and nothing older than it", () => {
    const dedup = new Dedup(16, 8)
    assert.isTrue(dedup.admit("a", 100n))
    assert.isFalse(dedup.admit("a", 100n))
    assert.isTrue(dedup.admit("b", 100n))
    assert.isTrue(dedup.admit("a", 90n))
    assert.isFalse(dedup.admit("a", 84n))
    assert.isTrue(dedup.admit("a", 85n))
  })

  it("forgets the least recently heard origin past maxOrigins", () => {
    const dedup = new Dedup(16, 2)
    dedup.admit("a", 1n)
    dedup.admit("b", 1n)
    dedup.admit("a", 2n)
    dedup.admit("c", 1n) // b is the least recent: forgotten
    assert.strictEqual(dedup.size, 2)
    assert.isTrue(dedup.admit("b", 1n))
    assert.isFalse(dedup.admit("c", 1n))
  })

  it("never forgets a pinned origin (a validator), however many others arrive", () => {
    const dedup = new Dedup(16, 2, (origin) => origin === "validator")
    assert.isTrue(dedup.admit("validator", 5n))
    for (let i = 0; i < 100; i++) dedup.admit(`stranger-${i}`, 1n)
    assert.strictEqual(dedup.size, 3)
    assert.isTrue(dedup.seen("validator", 5n))
    assert.isFalse(dedup.admit("validator", 5n))
  })

  it("seen is read-only and agrees with admit", () => {
    const dedup = new Dedup(16, 8)
    assert.isFalse(dedup.seen("a", 10n))
    assert.isFalse(dedup.seen("a", 10n))
    assert.isTrue(dedup.admit("a", 10n))
    assert.isTrue(dedup.seen("a", 10n))
    assert.isFalse(dedup.seen("a", 11n))
    assert.isTrue(dedup.seen("a", 10n - 16n))
    assert.isFalse(dedup.seen("a", 10n - 15n))
  })

  it("a jump of more than a window forgets the whole ring", () => {
    const dedup = new Dedup(16, 8)
    for (let s = 0n; s < 16n; s++) dedup.admit("a", s)
    assert.isTrue(dedup.admit("a", 1000n))
    assert.isTrue(dedup.admit("a", 999n))
    assert.isTrue(dedup.admit("a", 985n))
    assert.isFalse(dedup.admit("a", 984n))
  })

  it.prop(
    "agrees with a model that remembers everything, for sequences within the window",
    [fc.array(fc.bigInt({ min: 0n, max: 200n }), { maxLength: 400 })],
    ([sequences]) => {
      const window = 32
      const dedup = new Dedup(window, 4)
      const seen = new Set<bigint>()
      let highest = -1n
      for (const s of sequences) {
        const expected = !seen.has(s) && (highest < 0n || s > highest - BigInt(window))
        assert.strictEqual(dedup.seen("o", s), !expected, `seen ${s}`)
        assert.strictEqual(dedup.admit("o", s), expected, `sequence ${s}`)
        if (expected) {
          seen.add(s)
          if (s > highest) highest = s
        }
      }
    }
  )
})
