import { assert, describe, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import type * as Schema from "effect/Schema"
import { Codec, Message } from "../src/index.js"
import { fromHex, hex, plain } from "./fixtures/plain.js"

const messageSchemas = [
  Message.Proposal,
  Message.Vote,
  Message.QuorumCertificate,
  Message.NewView,
  Message.Timeout,
  Message.TimeoutCertificate,
  Message.SyncRequest,
  Message.SyncResponse,
  Message.RpcRequest,
  Message.RpcResponse,
  Message.Ping,
  Message.Pong,
  Message.Ack,
  Message.PeerRecord,
  Message.PeerExchangeRequest,
  Message.PeerExchangeResponse,
  Message.AppMessage
] as const

const encoded = (m: Message.Message): Uint8Array => Either.getOrThrow(Codec.encode(m))

describe("Codec", () => {
  it("covers every message type of the Message union", () => {
    assert.strictEqual(messageSchemas.length, Message.Message.members.length)
    assert.strictEqual(Codec.typeCodes.size, messageSchemas.length)
  })

  const tags = Array.from(Codec.typeCodes.keys())
  messageSchemas.forEach((schema, i) => {
    const tag = tags[i]
    it.prop(
      `decode(encode(m)) equals m and re-encodes byte for byte: ${tag}`,
      [schema as Schema.Schema<Message.Message>],
      ([message]) => {
        const bytes = encoded(message)
        const again = encoded(message)
        assert.strictEqual(hex(again), hex(bytes), "encoding the same message twice gives the same bytes")
        const decoded = Codec.decode(bytes)
        assert.isTrue(
          Either.isRight(decoded),
          `decode failed: ${Either.isLeft(decoded) && decoded.left.message}`
        )
        const value = Either.getOrThrow(decoded)
        assert.deepStrictEqual(plain(value), plain(message))
        assert.strictEqual(hex(encoded(value)), hex(bytes))
        // encodeAfter: the prefix, then exactly encode's bytes.
        const prefix = Uint8Array.of(0x01, bytes.length & 0xff, 0x7f)
        const after = Either.getOrThrow(Codec.encodeAfter(prefix, message))
        assert.strictEqual(hex(after), hex(prefix) + hex(bytes))
        // encodeLater: the same bytes, written where the frame puts them (here between two others).
        for (const p of [prefix, undefined]) {
          const later = Either.getOrThrow(Codec.encodeLater(p, message))
          const expected = p === undefined ? bytes : after
          assert.strictEqual(later.length, expected.length)
          const target = Buffer.alloc(later.length + 4, 0xee)
          later.writeTo(target, 2)
          assert.strictEqual(hex(target), `eeee${hex(expected)}eeee`)
        }
      },
      { fastCheck: { numRuns: 150 } }
    )
  })

  it("encodeLater: a message changed after the check is written as zeros of the checked length, never a throw", () => {
    const mutable = { ...vote, signature: new Uint8Array(64).fill(3) }
    const later = Either.getOrThrow(Codec.encodeLater(undefined, mutable))
    const fine = Buffer.alloc(later.length)
    later.writeTo(fine, 0)
    assert.strictEqual(hex(fine), hex(encoded(mutable)))
    ;(mutable as { blockHash: unknown }).blockHash = new Uint8Array(40)
    const longer = Buffer.alloc(later.length + 8, 0xee)
    later.writeTo(longer, 0)
    assert.strictEqual(hex(longer.subarray(0, later.length)), "00".repeat(later.length))
    ;(mutable as { blockHash: unknown }).blockHash = "not bytes"
    const broken = Buffer.alloc(later.length, 0xee)
    later.writeTo(broken, 0)
    assert.strictEqual(hex(broken), "00".repeat(later.length))
  })

  const vote = Message.Vote.make({
    view: 7n,
    blockHash: new Uint8Array(32).fill(0xab),
    voter: "11".repeat(32) as any,
    signature: new Uint8Array(64).fill(0xcd)
  })
  const voteBytes = encoded(vote)

  it("writes the type byte first and views as minimal varints", () => {
    assert.strictEqual(voteBytes[0], 0x02)
    assert.strictEqual(voteBytes[1], 7)
    assert.strictEqual(voteBytes.length, 1 + 1 + 32 + 32 + 64)
  })

  it("refuses an unknown type byte", () => {
    const result = Codec.decode(Uint8Array.of(0x7f, 0))
    assert.isTrue(
      Either.isLeft(result) && result.left._tag === "UnknownMessageType" && result.left.type === 0x7f
    )
  })

  it("refuses empty input and trailing bytes, naming the offset", () => {
    const empty = Codec.decode(new Uint8Array(0))
    assert.isTrue(Either.isLeft(empty) && empty.left._tag === "Malformed")
    const trailing = Codec.decode(new Uint8Array([...voteBytes, 0]))
    assert.isTrue(Either.isLeft(trailing))
    if (Either.isLeft(trailing) && trailing.left._tag === "Malformed") {
      assert.strictEqual(trailing.left.offset, voteBytes.length)
      assert.match(trailing.left.reason, /trailing/)
    } else assert.fail("expected Malformed")
  })

  it("refuses a truncated message with the path of the field it stopped in", () => {
    const result = Codec.decode(voteBytes.subarray(0, 50))
    if (Either.isLeft(result) && result.left._tag === "Malformed") {
      assert.strictEqual(result.left.path, "voter")
      assert.strictEqual(result.left.offset, 34)
    } else assert.fail("expected Malformed")
  })

  it("refuses overlong (non-canonical) varints and values above 2^64-1", () => {
    const overlong = Uint8Array.from([0x20, 0x87, 0x00]) // Ping, nonce 7 written in two bytes
    const a = Codec.decode(overlong)
    assert.isTrue(Either.isLeft(a) && a.left._tag === "Malformed" && /non-canonical/.test(a.left.reason))
    const max = Codec.decode(fromHex("20ffffffffffffffffff01"))
    assert.isTrue(Either.isRight(max) && (max.right as Message.Ping).nonce === 2n ** 64n - 1n)
    const over = Codec.decode(fromHex("20ffffffffffffffffff02"))
    assert.isTrue(Either.isLeft(over) && over.left._tag === "Malformed" && /64 bits/.test(over.left.reason))
  })

  it("refuses a list count that the remaining bytes cannot hold, before allocating it", () => {
    // PeerExchangeResponse with a count of 200 records in 3 bytes.
    const result = Codec.decode(fromHex("32c801"))
    if (Either.isLeft(result) && result.left._tag === "Malformed") {
      assert.strictEqual(result.left.path, "records")
      assert.match(result.left.reason, /cannot fit/)
    } else assert.fail("expected Malformed")
    // A count above the limit (2^32-1) is refused on the count alone.
    const huge = Codec.decode(fromHex("32ffffffff0f"))
    assert.isTrue(
      Either.isLeft(huge) && huge.left._tag === "Malformed" && /exceeds the limit/.test(huge.left.reason)
    )
  })

  it("refuses invalid UTF-8 and a bad option flag", () => {
    const badUtf8 = Codec.decode(fromHex("4002c3280100")) // AppMessage, topic bytes c3 28
    assert.isTrue(
      Either.isLeft(badUtf8) && badUtf8.left._tag === "Malformed" && /UTF-8/.test(badUtf8.left.reason)
    )
    const badFlag = Codec.decode(fromHex("11010002")) // SyncResponse, no blocks, option flag 2
    assert.isTrue(
      Either.isLeft(badFlag) && badFlag.left._tag === "Malformed" && badFlag.left.path === "highQC"
    )
  })

  it("validates certificates with the Schema: signer count and canonical bitmap", () => {
    const qc = {
      _tag: "QuorumCertificate" as const,
      view: 1n,
      blockHash: new Uint8Array(32),
      signers: Uint8Array.of(0b0000_0111),
      signatures: [new Uint8Array(64), new Uint8Array(64)]
    }
    const mismatch = Codec.encode(qc)
    assert.isTrue(Either.isLeft(mismatch) && /names 3 signers but carries 2/.test(mismatch.left.reason))
    const ok = { ...qc, signers: Uint8Array.of(0b0000_0011) }
    const bytes = encoded(ok)
    // The same certificate with a trailing zero byte in its bitmap: refused on decode.
    const padded = encoded({ ...ok, signers: Uint8Array.of(0b11) })
    const tampered = new Uint8Array([...padded.subarray(0, 34), 2, 0b11, 0, ...padded.subarray(36)])
    const result = Codec.decode(tampered)
    assert.isTrue(Either.isLeft(result) && /zero byte/.test((result.left as any).reason))
    assert.isTrue(Either.isRight(Codec.decode(bytes)))
  })

  it("refuses to encode what the type system let through", () => {
    const short = Codec.encode({ ...vote, blockHash: new Uint8Array(31) })
    assert.isTrue(Either.isLeft(short) && short.left.path === "blockHash")
    const negative = Codec.encode({ ...vote, view: -1n })
    assert.isTrue(Either.isLeft(negative) && negative.left.path === "view")
    // A lone surrogate cannot round-trip through UTF-8.
    const surrogate = Codec.encode({ _tag: "AppMessage", topic: "\ud800", data: new Uint8Array(1) })
    assert.isTrue(Either.isLeft(surrogate) && surrogate.left.path === "topic")
    const unknown = Codec.encode({ _tag: "Nope" } as any)
    assert.isTrue(Either.isLeft(unknown))
    // encodeAfter refuses the same way, naming the same field.
    const shortAfter = Codec.encodeAfter(Uint8Array.of(0), { ...vote, blockHash: new Uint8Array(31) })
    assert.isTrue(Either.isLeft(shortAfter) && shortAfter.left.path === "blockHash")
    assert.isTrue(Either.isLeft(Codec.encodeAfter(Uint8Array.of(0), { _tag: "Nope" } as any)))
    // encodeLater refuses at once, as encode does.
    const shortLater = Codec.encodeLater(undefined, { ...vote, blockHash: new Uint8Array(31) })
    assert.deepStrictEqual(Either.isLeft(shortLater) && shortLater.left, Either.isLeft(short) && short.left)
    assert.isTrue(Either.isLeft(Codec.encodeLater(undefined, { _tag: "Nope" } as any)))
  })

  it("gives signing bytes without the signature, under a domain prefix", () => {
    const signing = Either.getOrThrow(Codec.signingBytes(vote))
    const prefix = Buffer.from("hotstuff2/message/v1/")
    assert.strictEqual(hex(signing.subarray(0, prefix.length)), prefix.toString("hex"))
    assert.strictEqual(
      hex(signing.subarray(prefix.length)),
      hex(voteBytes.subarray(0, voteBytes.length - 64))
    )
  })

  it.effect("serves the same codec as a service, failing with the typed error", () =>
    Effect.gen(function* () {
      const codec = yield* Codec.Codec
      const bytes = yield* codec.encode(vote)
      assert.strictEqual(hex(bytes), hex(voteBytes))
      assert.deepStrictEqual(plain(yield* codec.decode(bytes)), plain(vote))
      const error = yield* Effect.flip(codec.decode(Uint8Array.of(0xee)))
      assert.strictEqual(error._tag, "UnknownMessageType")
    }).pipe(Effect.provide(Codec.Codec.layer))
  )
})
