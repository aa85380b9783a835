import { assert, describe, it } from "@effect/vitest"
import type { Identity } from "@hotstuff2/wire"
import * as fc from "effect/FastCheck"
import {
  decodeReceipt,
  decodeRouted,
  decodeTreeHeader,
  encodeReceipt,
  encodeRouted,
  encodeTreeHeader,
  MAX_DEMOTED,
  RECEIPT,
  type TreeHeader
} from "../src/internal/tree/header.js"

const bytes = (text: string): Uint8Array => new Uint8Array(Buffer.from(text.replace(/\s+/g, ""), "hex"))
const hex = (b: Uint8Array): string => Buffer.from(b).toString("hex")

const message = bytes("022a") // any non-empty bytes: the header does not look inside

const u64 = fc.bigInt({ min: 0n, max: 2n ** 64n - 1n })
const headers: fc.Arbitrary<TreeHeader> = fc.record({
  epoch: u64,
  round: u64,
  fanout: fc.integer({ min: 2, max: 1024 }),
  demoted: fc
    .uniqueArray(fc.oneof(fc.nat(300), fc.nat({ max: 2 ** 32 - 1 })), { maxLength: 40 })
    .map((a) => a.sort((x, y) => x - y))
})

/** What a decoder gives for `payload`; a throw fails the test with the input that caused it. */
const never = <A>(decode: (input: Uint8Array) => A, input: Uint8Array): A => {
  try {
    return decode(input)
  } catch (e) {
    assert.fail(`threw ${String(e)} on ${hex(input)}`)
  }
}

describe("tree header", () => {
  it.prop(
    "round-trips, the message a view of the payload's tail",
    [headers, fc.uint8Array({ minLength: 1 })],
    ([header, msg]) => {
      const payload = encodeTreeHeader(header, msg)
      const decoded = decodeTreeHeader(payload)
      if (typeof decoded === "string") assert.fail(decoded)
      assert.deepStrictEqual(decoded.header, header)
      assert.deepStrictEqual(decoded.message, msg)
      assert.strictEqual(decoded.message.buffer, payload.buffer)
    }
  )

  it("writes version, epoch, round, fanout, demoted count and indices as varints", () => {
    const payload = encodeTreeHeader({ epoch: 2n, round: 300n, fanout: 1024, demoted: [0, 128] }, message)
    assert.strictEqual(hex(payload), "01" + "02" + "ac02" + "8008" + "02" + "00" + "8001" + "022a")
  })

  const refused: ReadonlyArray<readonly [string, string, RegExp]> = [
    ["empty", "", /version cut short at offset 0/],
    ["version 2", "02 02 2a 04 00 ff", /version 2, only 1 is known/],
    ["version 0", "00 02 2a 04 00 ff", /version 0, only 1 is known/],
    ["overlong version", "81 00 02 2a 04 00 ff", /version is a non-canonical varint at offset 0/],
    ["fanout 1", "01 02 2a 01 00 ff", /^tree header: fanout 1 out of range 2..1024$/],
    ["fanout 0", "01 02 2a 00 00 ff", /fanout 0 out of range/],
    ["fanout 1025", "01 02 2a 81 08 00 ff", /fanout 1025 out of range/],
    ["fanout over 32 bits", "01 02 2a ff ff ff ff 1f 00 ff", /fanout exceeds 32 bits at offset 3/],
    ["epoch cut short", "01 82", /epoch cut short at offset 2/],
    ["overlong epoch", "01 82 00 2a 04 00 ff", /epoch is a non-canonical varint at offset 1/],
    ["epoch over 64 bits", "01 ffffffffffffffffff02 2a 04 00 ff", /epoch exceeds 64 bits/],
    ["epoch eleven bytes", "01 ffffffffffffffffff81 00 2a 04 00 ff", /epoch exceeds 64 bits/],
    ["overlong round (10 bytes)", "01 02 80808080808080808000 04 00 ff", /round is a non-canonical varint/],
    ["demoted unsorted", "01 02 2a 04 02 05 03 ff", /not strictly increasing \(5 then 3\)/],
    ["demoted duplicate", "01 02 2a 04 02 05 05 ff", /not strictly increasing \(5 then 5\)/],
    ["too many demoted", "01 02 2a 04 81 20 ff", /4097 demoted members, more than 4096/],
    ["demoted count past the bytes", "01 02 2a 04 05 01 02 ff", /5 demoted indices cannot fit in 3 bytes/],
    ["demoted index cut short", "01 02 2a 04 02 01 82", /demoted index 1 cut short at offset 7/],
    ["overlong demoted index", "01 02 2a 04 01 80 00 ff", /demoted index 0 is a non-canonical varint/],
    ["no message", "01 02 2a 04 01 03", /no message after the header/]
  ]
  for (const [name, input, reason] of refused) {
    it(`refuses ${name}, saying why`, () => {
      const decoded = never(decodeTreeHeader, bytes(input))
      assert.isString(decoded)
      assert.match(decoded as string, reason)
    })
  }

  it("refuses demoted indices past the member count when it is given", () => {
    const payload = encodeTreeHeader({ epoch: 2n, round: 42n, fanout: 4, demoted: [2, 7] }, message)
    assert.match(decodeTreeHeader(payload, 7) as string, /demoted index 7 past the 7 members/)
    assert.isObject(decodeTreeHeader(payload, 8))
  })

  it("refuses to encode a header no peer would accept", () => {
    const ok: TreeHeader = { epoch: 1n, round: 1n, fanout: 4, demoted: [] }
    assert.throws(() => encodeTreeHeader({ ...ok, fanout: 1 }), /fanout 1 out of range/)
    assert.throws(() => encodeTreeHeader({ ...ok, epoch: -1n }), /epoch -1 is not a u64/)
    assert.throws(() => encodeTreeHeader({ ...ok, round: 2n ** 64n }), /not a u64/)
    assert.throws(() => encodeTreeHeader({ ...ok, demoted: [3, 1] }), /not strictly increasing/)
    assert.throws(
      () => encodeTreeHeader({ ...ok, demoted: Array.from({ length: MAX_DEMOTED + 1 }, (_, i) => i) }),
      /4097 demoted members/
    )
  })
})

describe("routed payload", () => {
  const target = "60".repeat(32) as Identity.PeerId

  it("is the target's 32 bytes, then the message", () => {
    const payload = encodeRouted(target, message)
    assert.strictEqual(hex(payload), `${"60".repeat(32)}022a`)
    const decoded = decodeRouted(payload)
    if (typeof decoded === "string") assert.fail(decoded)
    assert.strictEqual(decoded.target, target)
    assert.deepStrictEqual(decoded.message, message)
  })

  it("refuses a cut-short target or a missing message, and a bad target to encode", () => {
    assert.match(decodeRouted(new Uint8Array(31)) as string, /target cut short \(31 of 32 bytes\)/)
    assert.match(decodeRouted(new Uint8Array(32)) as string, /nothing after the target/)
    assert.throws(() => encodeRouted("AB".repeat(32) as Identity.PeerId, message), /not a PeerId/)
  })
})

describe("receipt", () => {
  it.prop(
    "round-trips 1 to 256 sequence numbers",
    [fc.array(u64, { minLength: 1, maxLength: 256 })],
    ([sequences]) => {
      const slot = encodeReceipt(sequences)
      assert.strictEqual(slot[0], RECEIPT)
      assert.deepStrictEqual(decodeReceipt(slot.subarray(1)), sequences)
    }
  )

  const refused: ReadonlyArray<readonly [string, string, RegExp]> = [
    ["empty", "", /count cut short/],
    ["count 0", "00", /0 sequences out of range 1..256/],
    ["count 257", `81 02${"00".repeat(257)}`, /257 sequences out of range/],
    ["count past the bytes", "03 01 02", /3 sequences cannot fit in 2 bytes/],
    ["overlong count", "81 00 05", /count is a non-canonical varint/],
    ["sequence cut short", "02 01 ff", /sequence 1 cut short/],
    ["sequence over 64 bits", "01 ffffffffffffffffff03", /sequence 0 exceeds 64 bits/],
    ["overlong sequence", "01 ff00", /sequence 0 is a non-canonical varint/],
    ["trailing bytes", "01 05 06", /1 trailing bytes after the sequences/]
  ]
  for (const [name, input, reason] of refused) {
    it(`refuses ${name}, saying why`, () => {
      const decoded = never(decodeReceipt, bytes(input))
      assert.isString(decoded)
      assert.match(decoded as string, reason)
    })
  }

  it("refuses to encode no sequences, more than 256, or one that is not a u64", () => {
    assert.throws(() => encodeReceipt([]), /0 sequences out of range/)
    assert.throws(() => encodeReceipt(Array.from({ length: 257 }, () => 1n)), /257 sequences/)
    assert.throws(() => encodeReceipt([2n ** 64n]), /not a u64/)
  })
})

describe("decoders under random and mutated input", () => {
  it("never throw on 20,000 inputs (seeded)", () => {
    // A small deterministic generator (xorshift32), so a failure reproduces.
    let state = 0x2545f491
    const next = (): number => {
      state ^= state << 13
      state ^= state >>> 17
      state ^= state << 5
      return state >>> 0
    }
    const valid = [
      encodeTreeHeader({ epoch: 2n, round: 2n ** 40n, fanout: 32, demoted: [1, 200, 70000] }, message),
      encodeRouted("60".repeat(32) as Identity.PeerId, message),
      encodeReceipt([1n, 2n ** 63n, 300n]).subarray(1)
    ]
    const decoders: ReadonlyArray<(input: Uint8Array) => unknown> = [
      decodeTreeHeader,
      decodeRouted,
      decodeReceipt
    ]
    const outcomes = { accepted: 0, refused: 0 }
    for (let i = 0; i < 20_000; i++) {
      let input: Uint8Array
      if (i % 2 === 0) {
        input = Uint8Array.from(
          { length: next() % 48 },
          () => (next() % 4 === 0 ? 0x80 | next() : next()) & 0xff
        )
      } else {
        input = Uint8Array.from(valid[next() % valid.length]!)
        for (let k = 1 + (next() % 3); k > 0; k--) input[next() % input.length] = next() & 0xff
        if (next() % 4 === 0) input = input.subarray(0, next() % (input.length + 1))
      }
      for (const decode of decoders) {
        const result = never(decode, input)
        outcomes[typeof result === "string" ? "refused" : "accepted"]++
      }
    }
    assert.isAbove(outcomes.accepted, 1000)
    assert.isAbove(outcomes.refused, 1000)
  })
})
