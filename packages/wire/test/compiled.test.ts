// The generated codec (internal/compiled.ts) against its reference: the generic field closures with
// the whole Schema checked after every decode. Same bytes, same values, same errors, on valid
// messages, on values broken somewhere, and on mutated bytes.
import { assert, describe, it } from "@effect/vitest"
import * as Arbitrary from "effect/Arbitrary"
import * as Either from "effect/Either"
import * as fc from "effect/FastCheck"
import type * as Schema from "effect/Schema"
import { Codec, Identity, Message } from "../src/index.js"
import { replacements, replaceSomewhere } from "./fixtures/corrupt.js"
import { hex, plain } from "./fixtures/plain.js"

const outcome = (result: Either.Either<unknown, { readonly _tag: string }>): unknown =>
  Either.isRight(result)
    ? { ok: result.right instanceof Uint8Array ? hex(result.right) : plain(result.right) }
    : { error: { tag: result.left._tag, ...result.left } }

/** Overwrites, flips, inserts or deletes a few bytes, as a peer's bug or attack would. */
const mutation = fc.tuple(fc.nat(), fc.nat(255), fc.integer({ min: 0, max: 4 }))
const mutate = (bytes: Uint8Array, [at, value, kind]: [number, number, number]): Uint8Array => {
  const out = Uint8Array.from(bytes)
  const i = at % out.length
  switch (kind) {
    case 0:
      out[i] = value
      return out
    case 1:
      out[i]! ^= 1 << (value & 7)
      return out
    case 2:
      return out.subarray(0, i)
    case 3:
      return Uint8Array.from([...out.subarray(0, i), value, ...out.subarray(i)])
    default:
      return Uint8Array.from([...out.subarray(0, i), ...out.subarray(i + 1 + (value & 7))])
  }
}

describe("compiled codec", () => {
  Message.Message.members.forEach((member) => {
    const schema = member as unknown as Schema.Schema<Message.Message>
    const name = String(schema.ast).slice(0, 40)
    it.prop(
      `encode and decode agree with the reference on valid, broken and mutated input (${name})`,
      [
        Arbitrary.make(schema),
        fc.nat(),
        fc.nat({ max: replacements.length - 1 }),
        fc.array(mutation, { minLength: 1, maxLength: 3 })
      ],
      ([message, pick, r, mutations]) => {
        const bytes = Either.getOrThrow(Codec.referenceEncode(message))
        assert.strictEqual(hex(Either.getOrThrow(Codec.encode(message))), hex(bytes))
        assert.deepStrictEqual(outcome(Codec.decode(bytes)), outcome(Codec.referenceDecode(bytes)))
        assert.isTrue(Either.isRight(Codec.decode(bytes)))

        const broken = replaceSomewhere(message, pick, replacements[r]) as Message.Message
        assert.deepStrictEqual(outcome(Codec.encode(broken)), outcome(Codec.referenceEncode(broken)))

        let mutated = bytes
        for (const m of mutations) mutated = mutate(mutated, m)
        assert.deepStrictEqual(outcome(Codec.decode(mutated)), outcome(Codec.referenceDecode(mutated)))
      },
      { fastCheck: { numRuns: 300 } }
    )
  })

  it("refuses an upper-case PeerId after encoding the same PeerId in lower case", () => {
    const identity = Either.getOrThrow(Identity.fromSeed(new Uint8Array(32).fill(3)))
    const vote = (voter: string) =>
      ({
        _tag: "Vote",
        view: 1n,
        blockHash: new Uint8Array(32),
        voter,
        signature: new Uint8Array(64)
      }) as Message.Vote
    const bytes = Either.getOrThrow(Codec.encode(vote(identity.peerId)))
    assert.strictEqual(hex(bytes.subarray(34, 66)), identity.peerId)
    // Remembered now: the second encoding takes the remembered bytes.
    assert.strictEqual(hex(Either.getOrThrow(Codec.encode(vote(identity.peerId)))), hex(bytes))
    const upper = Codec.encode(vote(identity.peerId.toUpperCase()))
    assert.isTrue(Either.isLeft(upper))
    assert.strictEqual(Either.isLeft(upper) && upper.left.path, "voter")
  })

  it("decodes a PeerId from a plain Uint8Array and from a Buffer at an offset", () => {
    const identity = Either.getOrThrow(Identity.fromSeed(new Uint8Array(32).fill(4)))
    const bytes = Either.getOrThrow(
      Codec.encode(
        Message.Vote.make({
          view: 7n,
          blockHash: new Uint8Array(32).fill(1),
          voter: identity.peerId,
          signature: new Uint8Array(64).fill(2)
        })
      )
    )
    const padded = Buffer.alloc(bytes.length + 5)
    padded.set(bytes, 5)
    for (const input of [Uint8Array.from(bytes), padded.subarray(5)]) {
      const decoded = Either.getOrThrow(Codec.decode(input)) as Message.Vote
      assert.strictEqual(decoded.voter, identity.peerId)
    }
  })
})
