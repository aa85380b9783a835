// Fuzz: random and mutated frames through every decoder, seeded and bounded. Nothing may throw;
// every failure must be a typed error; anything that decodes must re-encode to the same bytes.
import { assert, describe, it } from "@effect/vitest"
import * as Arbitrary from "effect/Arbitrary"
import * as Either from "effect/Either"
import * as fc from "effect/FastCheck"
import { Codec, Envelope, Frame, Identity, Message } from "../src/index.js"
import { hex } from "./fixtures/plain.js"

const SEED = Number(process.env.FUZZ_SEED ?? 20261124)
const CASES = Number(process.env.FUZZ_CASES ?? 100_000)
/** Bounded work, not a timing check: room for a loaded 2-core CI machine. */
const TEST_TIMEOUT_MS = 180_000
/**
 * The loop stops here, well before the test's timeout, so that a run that is too slow (or a decoder
 * that got slow) fails with how far it got, instead of being cut by the runner.
 */
const HANG_GUARD_MS = TEST_TIMEOUT_MS * 0.8
const NETWORK = "fuzz"
const limits: Frame.FrameLimits = {
  maxFrameBytes: 64 * 1024,
  maxDecompressedBytes: 256 * 1024,
  maxMessagesPerFrame: 64
}

/** mulberry32: a small seeded PRNG, so a failing case can be replayed from its seed. */
const prng = (seed: number) => () => {
  seed = (seed + 0x6d2b79f5) | 0
  let t = Math.imul(seed ^ (seed >>> 15), 1 | seed)
  t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296
}

const corpus = (): Array<Uint8Array> => {
  const identity = Either.getOrThrow(Identity.fromSeed(new Uint8Array(32).fill(5)))
  const messages = fc.sample(Arbitrary.make(Message.Message), { seed: SEED, numRuns: 200 })
  const frames: Array<Uint8Array> = []
  messages.forEach((message, i) => {
    const bytes = Either.getOrThrow(Codec.encode(message))
    const sealed = Either.getOrThrow(
      Envelope.seal(identity, { networkId: NETWORK, sequence: BigInt(i), payload: bytes })
    ).bytes
    frames.push(
      Either.getOrThrow(
        Frame.encode({ channel: i % 5, messages: [bytes, sealed] }, { maxFrameBytes: limits.maxFrameBytes })
      )
    )
  })
  frames.push(
    Either.getOrThrow(
      Frame.encode(
        { channel: 4, messages: [new Uint8Array(50_000).fill(7)] },
        { compression: "deflate", compressionThreshold: 1024 }
      )
    )
  )
  return frames
}

const mutate = (input: Uint8Array, random: () => number): Uint8Array => {
  const pick = (n: number) => Math.floor(random() * n)
  const bytes = Uint8Array.from(input)
  switch (pick(8)) {
    case 0: // flip bits
      for (let i = 0, n = 1 + pick(4); i < n; i++) bytes[pick(bytes.length)]! ^= 1 << pick(8)
      return bytes
    case 1: // overwrite a byte with an interesting value
      bytes[pick(bytes.length)] = [0, 1, 0x7f, 0x80, 0xff][pick(5)]!
      return bytes
    case 2: // truncate
      return bytes.subarray(0, pick(bytes.length))
    case 3: // a huge length prefix in the header, or a huge varint somewhere
      if (random() < 0.5) bytes.set([0xff, 0xff, 0xff, 0xff], 4)
      else
        bytes.set([0xff, 0xff, 0xff, 0xff, 0x0f], Math.min(pick(bytes.length), Math.max(0, bytes.length - 5)))
      return bytes
    case 4: // delete a run
      {
        const at = pick(bytes.length)
        return new Uint8Array([...bytes.subarray(0, at), ...bytes.subarray(at + 1 + pick(16))])
      }
    case 5: // insert random bytes
      {
        const at = pick(bytes.length)
        const extra = Array.from({ length: 1 + pick(16) }, () => pick(256))
        return new Uint8Array([...bytes.subarray(0, at), ...extra, ...bytes.subarray(at)])
      }
    case 6: // a valid header over random bytes
      {
        const body = Uint8Array.from({ length: pick(300) }, () => pick(256))
        const out = new Uint8Array(8 + body.length)
        out.set([1, pick(256), random() < 0.2 ? 1 : 0, 0], 0)
        new DataView(out.buffer).setUint32(4, body.length)
        out.set(body, 8)
        return out
      }
    default: // pure noise
      return Uint8Array.from({ length: pick(200) }, () => pick(256))
  }
}

describe("fuzz", () => {
  it(
    `${CASES} random and mutated frames: no throw, only typed errors, canonical re-encoding (seed ${SEED})`,
    () => {
      const random = prng(SEED)
      const seeds = corpus()
      const started = Date.now()
      const deadline = started + HANG_GUARD_MS
      const seen = new Map<string, number>()
      const count = (tag: string) => seen.set(tag, (seen.get(tag) ?? 0) + 1)
      let cases = 0
      for (; cases < CASES && Date.now() < deadline; cases++) {
        const input = mutate(seeds[Math.floor(random() * seeds.length)]!, random)
        const decoder = new Frame.FrameDecoder(limits)
        const frames: Array<Frame.Frame> = []
        let at = 0
        try {
          while (at < input.length) {
            const cut = Math.min(input.length, at + 1 + Math.floor(random() * 64))
            const error = decoder.push(input.subarray(at, cut), (f) => frames.push(f))
            at = cut
            if (error) {
              count(error._tag)
              break
            }
          }
          for (const frame of frames) {
            for (const message of frame.messages) {
              const decoded = Codec.decode(message)
              if (Either.isRight(decoded)) {
                count("message ok")
                const again = Either.getOrThrow(Codec.encode(decoded.right))
                assert.strictEqual(hex(again), hex(message), "a decoded message re-encodes to the same bytes")
              } else count(decoded.left._tag)
              const opened = Envelope.open(message, NETWORK)
              if (Either.isRight(opened)) count("envelope ok")
              else count(`envelope ${opened.left._tag}`)
            }
          }
        } catch (e) {
          assert.fail(
            `case ${cases} (seed ${SEED}) threw on ${hex(input).slice(0, 400)}: ${(e as Error)?.stack ?? e}`
          )
        }
      }
      if (process.env.FUZZ_REPORT) console.log(JSON.stringify([...seen]))
      assert.strictEqual(
        cases,
        CASES,
        `the hang guard stopped the run after ${cases} cases in ${Date.now() - started} ms (seed ${SEED})`
      )
      // The run exercised the failure paths, not only the happy one.
      for (const tag of [
        "FrameTooLarge",
        "Malformed",
        "UnknownVersion",
        "message ok",
        "envelope BadSignature"
      ]) {
        assert.isAbove(seen.get(tag) ?? 0, 0, `no case produced ${tag}: ${JSON.stringify([...seen])}`)
      }
    },
    TEST_TIMEOUT_MS
  )
})
