import { assert, describe, it } from "@effect/vitest"
import * as Either from "effect/Either"
import * as fc from "effect/FastCheck"
import * as Option from "effect/Option"
import { Codec, Envelope, Identity, Message } from "../src/index.js"
import { hex, plain } from "./fixtures/plain.js"

const origin = Either.getOrThrow(Identity.fromSeed(new Uint8Array(32).fill(3)))
const network = "hotstuff2-test"
const ping = Either.getOrThrow(Codec.encode(Message.Ping.make({ nonce: 99n })))
const sealed = (options: Partial<Envelope.SealOptions> = {}) =>
  Either.getOrThrow(Envelope.seal(origin, { networkId: network, sequence: 1n, payload: ping, ...options }))

describe("Envelope", () => {
  it("opens what it sealed: origin, sequence, trace context and message", () => {
    const trace = { traceId: new Uint8Array(16).fill(1), spanId: new Uint8Array(8).fill(2), flags: 1 }
    const { envelope, bytes } = sealed({ sequence: 2n ** 64n - 1n, trace })
    const opened = Either.getOrThrow(Envelope.open(bytes, network))
    assert.strictEqual(opened.envelope.origin, origin.peerId)
    assert.strictEqual(opened.envelope.sequence, 2n ** 64n - 1n)
    assert.deepStrictEqual(plain(opened.envelope.trace), plain(Option.some(trace)))
    assert.deepStrictEqual(plain(opened.message), plain(Message.Ping.make({ nonce: 99n })))
    assert.strictEqual(hex(Either.getOrThrow(Envelope.encode(envelope))), hex(bytes))
  })

  it.prop(
    "any change to the signed bytes is a BadSignature or Malformed, never a message",
    [fc.nat(), fc.integer({ min: 1, max: 255 })],
    ([position, xor]) => {
      const { bytes } = sealed()
      const tampered = Uint8Array.from(bytes)
      tampered[position % bytes.length]! ^= xor
      const result = Envelope.open(tampered, network)
      assert.isTrue(Either.isLeft(result))
      if (Either.isLeft(result)) assert.include(["BadSignature", "Malformed"], result.left._tag)
    }
  )

  it("binds the network id: an envelope from another network does not verify", () => {
    const result = Envelope.open(sealed().bytes, "hotstuff2-mainnet")
    assert.isTrue(Either.isLeft(result) && result.left._tag === "BadSignature")
  })

  it("verifies the signature before decoding the payload", () => {
    // A payload that is not a message, signed properly: only then does decoding run (and fail).
    const junk = Uint8Array.of(0xee, 1, 2)
    const good = Envelope.open(sealed({ payload: junk }).bytes, network)
    assert.isTrue(Either.isLeft(good) && good.left._tag === "UnknownMessageType")
    // The same junk with a bad signature never reaches the payload decoder.
    const forged = Uint8Array.from(sealed({ payload: junk }).bytes)
    forged[forged.length - 1]! ^= 1
    const bad = Envelope.open(forged, network)
    assert.isTrue(Either.isLeft(bad) && bad.left._tag === "BadSignature")
  })

  it("verifying an envelope with a malformed origin does not make the codec accept that string as a PeerId", () => {
    // Found by review: the encoder remembered every PeerId string it wrote, and `verify` writes an
    // origin nothing validated; a later encode then took the remembered string without its check.
    const { envelope } = sealed()
    const vote = (voter: string) =>
      Codec.encode({
        _tag: "Vote",
        view: 1n,
        blockHash: new Uint8Array(32),
        voter,
        signature: new Uint8Array(64)
      } as never)
    for (const bad of ["AB".repeat(32), "ab".repeat(10)]) {
      assert.isTrue(Either.isLeft(vote(bad)))
      assert.isTrue(Either.isLeft(Envelope.verify({ ...envelope, origin: bad as Identity.PeerId }, network)))
      assert.isTrue(Either.isLeft(vote(bad)), `${bad} is still no PeerId after a verify`)
    }
  })

  it("has an id derived from origin and sequence only", () => {
    const a = Envelope.id(sealed({ sequence: 5n }).envelope)
    assert.strictEqual(a, Envelope.id({ origin: origin.peerId, sequence: 5n }))
    assert.match(a, /^[0-9a-f]{64}$/)
    assert.notStrictEqual(a, Envelope.id(sealed({ sequence: 6n }).envelope))
    assert.strictEqual(Envelope.id(sealed({ sequence: 5n, payload: Uint8Array.of(0x21, 1) }).envelope), a)
  })

  it("refuses to encode an envelope its Schema refuses", () => {
    const { envelope } = sealed()
    const short = Envelope.encode({ ...envelope, signature: envelope.signature.subarray(0, 63) })
    assert.isTrue(Either.isLeft(short) && short.left.path === "signature")
  })

  it("accepts only short printable ASCII network ids, so two ids never share a domain", () => {
    for (const networkId of ["", "\ud800", "a b", "x".repeat(65)]) {
      const result = Envelope.seal(origin, { networkId, sequence: 1n, payload: ping })
      assert.isTrue(Either.isLeft(result) && result.left.path === "networkId", JSON.stringify(networkId))
    }
    const verified = Envelope.verify(sealed().envelope, "\ud800")
    assert.isTrue(Either.isLeft(verified) && verified.left._tag === "BadSignature")
  })

  it("refuses to seal what it could not open, and trailing bytes on decode", () => {
    const tooBigTrace = Envelope.seal(origin, {
      networkId: network,
      sequence: 1n,
      payload: ping,
      trace: { traceId: new Uint8Array(15), spanId: new Uint8Array(8), flags: 0 }
    })
    assert.isTrue(Either.isLeft(tooBigTrace) && tooBigTrace.left.path.startsWith("trace"))
    const negative = Envelope.seal(origin, { networkId: network, sequence: -1n, payload: ping })
    assert.isTrue(Either.isLeft(negative) && negative.left.path === "sequence")
    const trailing = Envelope.decode(new Uint8Array([...sealed().bytes, 0]))
    assert.isTrue(Either.isLeft(trailing) && /trailing/.test(trailing.left.reason))
  })
})
