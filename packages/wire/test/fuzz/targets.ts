// The decoders of @hotstuff2/wire that take a peer's bytes, as fuzz targets: the frame decoder (a
// stream cut at random points, compressed frames included), the message codec and the envelope
// (decode, verify, payload). The bounded test (test/fuzz.test.ts) and `npm run fuzz` (run.ts) run
// these same targets through the one engine in @hotstuff2/testing.
import * as zlib from "node:zlib"
import { Fuzz } from "@hotstuff2/testing"
import * as Arbitrary from "effect/Arbitrary"
import * as Either from "effect/Either"
import * as fc from "effect/FastCheck"
import { Codec, Envelope, Frame, Identity, Message } from "../../src/index.js"
import { hex, plain } from "../fixtures/plain.js"
import { vectors } from "../fixtures/vectors.js"

/** The network id every fuzz envelope is sealed and opened under. */
export const NETWORK = "fuzz"
/** Seeds the corpus (which messages the Schemas' arbitraries give), not the cases. */
const CORPUS_SEED = 20261124

/** Tight limits, so that mutated inputs reach every limit; a fifth of the cases use the defaults. */
export const limits: Frame.FrameLimits = {
  maxFrameBytes: 64 * 1024,
  maxDecompressedBytes: 256 * 1024,
  maxMessagesPerFrame: 64
}

const identity = Either.getOrThrow(Identity.fromSeed(new Uint8Array(32).fill(5)))
const other = Either.getOrThrow(Identity.fromSeed(new Uint8Array(32).fill(6)))

const concat = (...parts: ReadonlyArray<Uint8Array>): Uint8Array => new Uint8Array(Buffer.concat(parts))
const pick = <A>(random: Fuzz.Random, xs: ReadonlyArray<A>): A => xs[Fuzz.int(random, xs.length)]!
const genericMutators = Object.values(Fuzz.mutators)
const mutateOnce = (bytes: Uint8Array, random: Fuzz.Random, seeds: ReadonlyArray<Uint8Array>) =>
  pick(random, genericMutators)(bytes, random, { seeds, dictionary: [] })

// ---- corpus ----

const encoded = (m: Message.Message): Uint8Array => Either.getOrThrow(Codec.encode(m))

const messages: ReadonlyArray<Message.Message> = [
  ...fc.sample(Arbitrary.make(Message.Message), { seed: CORPUS_SEED, numRuns: 200 }),
  ...Object.values(vectors).flatMap((v) => (v.kind === "message" ? [v.message] : []))
]

/** Every corpus message, encoded. */
export const messageSeeds: ReadonlyArray<Uint8Array> = messages.map(encoded)

const trace: Envelope.TraceContext = {
  traceId: Uint8Array.from({ length: 16 }, (_, i) => i + 1),
  spanId: Uint8Array.from({ length: 8 }, (_, i) => 0xa0 + i),
  flags: 1
}

const seal = (
  by: Identity.Identity,
  sequence: bigint,
  payload: Uint8Array,
  traced: boolean,
  network = NETWORK
) =>
  Either.getOrThrow(
    Envelope.seal(by, { networkId: network, sequence, payload, trace: traced ? trace : undefined })
  ).bytes

/** Sealed envelopes of the corpus messages; a few by another key, or for another network. */
export const envelopeSeeds: ReadonlyArray<Uint8Array> = [
  ...messageSeeds.map((payload, i) => seal(identity, BigInt(i) * 1_000_003n, payload, i % 3 === 0)),
  seal(other, 2n ** 64n - 1n, messageSeeds[0]!, true),
  seal(identity, 7n, messageSeeds[1]!, false, "another-network"),
  seal(identity, 8n, Uint8Array.of(0xee, 1, 2, 3), false) // a payload that is no message
]

const frame = (channel: number, batch: ReadonlyArray<Uint8Array>, compress = false): Uint8Array =>
  Either.getOrThrow(
    Frame.encode(
      { channel, messages: batch },
      compress
        ? { compression: "deflate", compressionThreshold: 64 }
        : { maxFrameBytes: limits.maxFrameBytes }
    )
  )

/** A frame header over `body`, the declared length `length` (default: the body's). */
const header = (channel: number, flags: number, body: Uint8Array, length = body.length): Uint8Array => {
  const out = new Uint8Array(Frame.HEADER_BYTES)
  out.set([Frame.VERSION, channel, flags, 0])
  new DataView(out.buffer).setUint32(4, length >>> 0)
  return concat(out, body)
}

/** A batch body: the message count (or `count`) and each message length-prefixed, no checks. */
const batchBody = (batch: ReadonlyArray<Uint8Array>, count = batch.length): Uint8Array =>
  concat(Fuzz.leb128(BigInt(count)), ...batch.flatMap((m) => [Fuzz.leb128(BigInt(m.length)), m]))

/** A compressed frame of `inflated`, declaring `declared` inflated bytes (default: the truth). */
const deflated = (channel: number, inflated: Uint8Array, declared = inflated.length): Uint8Array =>
  header(channel, Frame.Flags.deflate, concat(Fuzz.leb128(BigInt(declared)), zlib.deflateRawSync(inflated)))

const votes = messages.filter((m) => m._tag === "Vote").map(encoded)

/** Bytes that deflate about four times (four symbols): a compressed frame within every ratio limit. */
const lowEntropy = (length: number): Uint8Array => {
  const random = Fuzz.prng(CORPUS_SEED)
  return Uint8Array.from({ length }, () => 0x41 + Fuzz.int(random, 4))
}

/** Frames of the corpus (plain, compressed, streams of several), and some a decoder must refuse. */
export const frameSeeds: ReadonlyArray<Uint8Array> = [
  ...messageSeeds.map((m, i) => frame(i % 5, [m, envelopeSeeds[i]!])),
  frame(4, [new Uint8Array(50_000).fill(7)], true), // sent plain: it would inflate past the ratio limit
  deflated(4, batchBody([lowEntropy(60_000), lowEntropy(3000)])),
  frame(
    1,
    Array.from({ length: 40 }, (_, i) => votes[i % votes.length]!),
    true
  ),
  concat(
    frame(0, [messageSeeds[0]!]),
    frame(1, [messageSeeds[1]!, messageSeeds[2]!]),
    frame(2, [messageSeeds[3]!])
  ),
  frame(
    3,
    Array.from({ length: limits.maxMessagesPerFrame }, (_, i) => Uint8Array.of(i + 1))
  ),
  // inflates far past what it declares (a deflate bomb); declares more than the size and ratio limits
  deflated(4, batchBody([new Uint8Array(1024 * 1024)]), 1000),
  deflated(4, batchBody([new Uint8Array(300 * 1024)])),
  deflated(4, batchBody([new Uint8Array(200 * 1024)])),
  // a batch that claims more messages than it holds, and one with trailing bytes
  header(1, 0, batchBody([Uint8Array.of(1, 2)], 3)),
  header(1, 0, concat(batchBody([Uint8Array.of(1, 2)]), Uint8Array.of(9)))
]

// ---- frames ----

/** Frames decoded one at a time, as `Frame.decode` sees them, and where each started. */
const framesAt = (input: Uint8Array, count: number): Array<{ at: number; bytes: Uint8Array }> => {
  const out: Array<{ at: number; bytes: Uint8Array }> = []
  let at = 0
  for (let i = 0; i < count && at + Frame.HEADER_BYTES <= input.length; i++) {
    const length = new DataView(input.buffer, input.byteOffset + at + 4, 4).getUint32(0)
    out.push({ at, bytes: input.subarray(at, at + Frame.HEADER_BYTES + length) })
    at += Frame.HEADER_BYTES + length
  }
  return out
}

const frameMutators: ReadonlyArray<Fuzz.Mutator> = [
  // the header's length made true again, so that a mutated body is decoded rather than waited for
  (input) => {
    if (input.length < Frame.HEADER_BYTES) return input
    const out = Uint8Array.from(input)
    new DataView(out.buffer).setUint32(4, out.length - Frame.HEADER_BYTES)
    return out
  },
  // a valid header over random bytes, sometimes flagged compressed
  (_input, random) => header(Fuzz.int(random, 256), random() < 0.2 ? 1 : 0, Fuzz.randomBytes(random, 512)),
  // the seed's messages (or the corpus's) mutated, then framed again: plain or compressed, the
  // count and the declared inflated size sometimes wrong
  (input, random, context) => {
    const decoded = Frame.decode(input, Frame.defaultLimits)
    const batch = Either.isRight(decoded)
      ? [...decoded.right.messages]
      : [pick(random, messageSeeds), pick(random, envelopeSeeds)]
    const i = Fuzz.int(random, batch.length)
    batch[i] = mutateOnce(batch[i]!, random, context.seeds)
    if (random() < 0.2) batch.push(random() < 0.5 ? new Uint8Array(0) : pick(random, messageSeeds))
    const count = random() < 0.1 ? batch.length + Fuzz.int(random, 5) - 2 : batch.length
    const body = batchBody(batch, Math.max(0, count))
    if (random() < 0.5) return header(Fuzz.int(random, 8), 0, body)
    const declared = random() < 0.15 ? body.length + Fuzz.int(random, 64) - 32 : body.length
    return deflated(Fuzz.int(random, 8), body, Math.max(0, declared))
  },
  // two frames back to back: the decoder must find the second where the first ends
  (input, random, context) => concat(input, pick(random, context.seeds))
]

const CHUNKS = [1, 7, 64, 4096, Number.POSITIVE_INFINITY]

/** Limits a case decodes under: tight (most), tight without the ratio limit, compression on one channel only, the defaults. */
const LIMITS: ReadonlyArray<Frame.FrameLimits> = [
  limits,
  limits,
  { ...limits, maxInflationRatio: 1_000_000 },
  { ...limits, compressedChannels: new Set([4]) },
  Frame.defaultLimits
]

/**
 * `Frame.FrameDecoder` (synchronous inflation: the default) on the input cut into chunks of a random
 * size (one byte to all at once), with `admitCompressed` absent, admitting, or refusing at random. The
 * label is its error's tag, or "frames" (at least one whole frame) or "incomplete". Properties: after
 * an error every push returns that error; every frame equals what `Frame.decode` makes of its bytes
 * and is marked `compressed` exactly when it came so; a plain frame re-encodes to exactly its bytes.
 */
export const frames: Fuzz.Target = {
  name: "frames",
  seeds: frameSeeds,
  mutators: frameMutators,
  dictionary: [
    Uint8Array.of(Frame.VERSION, 0, 0, 0),
    Uint8Array.of(Frame.VERSION, 4, Frame.Flags.deflate, 0),
    Uint8Array.of(0x78, 0x9c),
    Uint8Array.of(0x03, 0x00)
  ],
  expected: ["frames", "incomplete", "FrameTooLarge", "DecompressedTooLarge", "Malformed", "UnknownVersion"],
  run: (input, random) => {
    const frameLimits = pick(random, LIMITS)
    const decoder = new Frame.FrameDecoder(frameLimits)
    /** Each whole frame in order: decoded, or dropped uninflated by `admitCompressed`. */
    const seen: Array<Frame.Frame | "dropped"> = []
    const admission = random()
    if (admission < 0.5) {
      decoder.admitCompressed = () => {
        const admitted = admission < 0.4 || random() < 0.5
        if (!admitted) seen.push("dropped")
        return admitted
      }
    }
    const chunk = pick(random, CHUNKS)
    let error: ReturnType<Frame.FrameDecoder["push"]>
    for (let at = 0; at < input.length && error === undefined; ) {
      const cut = Math.min(
        input.length,
        at + (chunk === 1 ? 1 : 1 + Fuzz.int(random, Math.min(chunk, input.length)))
      )
      error = decoder.push(input.subarray(at, cut), (f) => seen.push(f))
      at = cut
    }
    const decoded = seen.filter((f): f is Frame.Frame => f !== "dropped")
    const label = error?._tag ?? (decoded.length > 0 ? "frames" : "incomplete")
    const violation = Fuzz.unmetered(() => {
      if (error !== undefined && decoder.push(Uint8Array.of(Frame.VERSION), () => {}) !== error) {
        return "a push after an error did not return that error"
      }
      if (decoder.held) return "the decoder holds frames without asynchronous inflation"
      const spans = framesAt(input, seen.length)
      for (let i = 0; i < seen.length; i++) {
        const { at, bytes } = spans[i]!
        const f = seen[i]!
        const compressed = (bytes[2]! & Frame.Flags.deflate) !== 0
        if (f === "dropped") {
          if (!compressed) return `frame ${i} (at ${at}) is plain, yet was offered to admitCompressed`
          continue
        }
        if ((f.compressed === true) !== compressed)
          return `frame ${i} (at ${at}) is marked wrongly as compressed`
        const alone = Frame.decode(bytes, frameLimits)
        if (Either.isLeft(alone) || alone.right.messages.map(hex).join() !== f.messages.map(hex).join()) {
          return `frame ${i} (at ${at}): Frame.decode disagrees with FrameDecoder`
        }
        if (!compressed) {
          const again = Frame.encode(f, { maxFrameBytes: frameLimits.maxFrameBytes })
          if (Either.isLeft(again) || hex(again.right) !== hex(bytes)) {
            return `frame ${i} (at ${at}) does not re-encode to its bytes`
          }
        }
      }
      return undefined
    })
    return { label, output: decoded, violation }
  }
}

// ---- messages ----

const typeBytes = [...Codec.typeCodes.values()]

/**
 * `Codec.decode`. Properties: what decodes re-encodes to the same bytes, and the generated decoder
 * agrees with the reference one (`Codec.referenceDecode`) on every input, value and error tag.
 */
export const messagesTarget: Fuzz.Target = {
  name: "messages",
  seeds: messageSeeds,
  mutators: [
    // the body read as another type
    (input, random) => concat(Uint8Array.of(pick(random, typeBytes)), input.subarray(1)),
    (input, random) => concat(Uint8Array.of(random() < 0.5 ? Fuzz.int(random, 256) : 0), input.subarray(1))
  ],
  dictionary: [
    ...typeBytes.map((t) => Uint8Array.of(t)),
    new Uint8Array(32).fill(0xab),
    new Uint8Array(64),
    Uint8Array.of(0xf0, 0x9f, 0x9a, 0x80),
    Uint8Array.of(0xed, 0xa0, 0x80)
  ],
  expected: ["ok", "Malformed", "UnknownMessageType"],
  run: (input) => {
    const decoded = Codec.decode(input)
    const violation = Fuzz.unmetered(() => {
      const reference = Codec.referenceDecode(input)
      if (Either.isLeft(decoded)) {
        return Either.isRight(reference) || reference.left._tag !== decoded.left._tag
          ? `decode fails with ${decoded.left._tag}, the reference ${Either.isRight(reference) ? "succeeds" : `fails with ${reference.left._tag}`}`
          : undefined
      }
      const again = Codec.encode(decoded.right)
      if (Either.isLeft(again))
        return `a decoded ${decoded.right._tag} does not encode: ${again.left.message}`
      if (hex(again.right) !== hex(input)) return `a decoded ${decoded.right._tag} re-encodes differently`
      if (Either.isLeft(reference)) return `decode succeeds, the reference fails: ${reference.left.message}`
      if (JSON.stringify(plain(reference.right)) !== JSON.stringify(plain(decoded.right))) {
        return "decode and the reference decode to different values"
      }
      return undefined
    })
    return Either.isLeft(decoded)
      ? { label: decoded.left._tag, violation }
      : { label: "ok", output: decoded.right, violation }
  }
}

// ---- envelopes ----

/**
 * `Envelope.open` (decode, verify under NETWORK, decode the payload), after `Envelope.decode` alone.
 * Labels: "ok", "Malformed" (the envelope), "BadSignature", "payload <tag>" (signed, but no message).
 * Property: a decoded envelope re-encodes to exactly its bytes.
 */
export const envelopes: Fuzz.Target = {
  name: "envelopes",
  seeds: envelopeSeeds,
  mutators: [
    // the payload mutated and sealed again, so that the signature verifies and the payload decoder runs
    (input, random, context) => {
      const decoded = Envelope.decode(input)
      const payload = Either.isRight(decoded) ? decoded.right.payload : pick(random, messageSeeds)
      return seal(
        identity,
        BigInt(Fuzz.int(random, 2 ** 30)),
        mutateOnce(payload, random, context.seeds),
        random() < 0.3
      )
    },
    // a sealed envelope whose signed body is then changed (a relay tampering with it)
    (_input, random, context) =>
      mutateOnce(
        seal(identity, BigInt(Fuzz.int(random, 1000)), pick(random, messageSeeds), random() < 0.5),
        random,
        context.seeds
      )
  ],
  dictionary: [
    Uint8Array.of(0x00),
    Uint8Array.of(0x01),
    new Uint8Array(64),
    Identity.peerIdToBytes(identity.peerId)
  ],
  expected: ["ok", "Malformed", "BadSignature", "payload Malformed", "payload UnknownMessageType"],
  run: (input) => {
    const decoded = Envelope.decode(input)
    let violation = Fuzz.unmetered(() => {
      if (Either.isLeft(decoded)) return undefined
      const again = Envelope.encode(decoded.right)
      if (Either.isLeft(again)) return `a decoded envelope does not encode: ${again.left.message}`
      return hex(again.right) !== hex(input) ? "a decoded envelope re-encodes differently" : undefined
    })
    const opened = Envelope.open(input, NETWORK)
    if (Either.isRight(opened)) return { label: "ok", output: opened.right, violation }
    const error = opened.left
    const label =
      error._tag === "BadSignature"
        ? "BadSignature"
        : error._tag === "Malformed" && error.what === "Envelope"
          ? "Malformed"
          : `payload ${error._tag}`
    if (Either.isLeft(decoded) !== (label === "Malformed")) {
      violation = `Envelope.decode and Envelope.open disagree (${label})`
    }
    return { label, output: Either.isRight(decoded) ? decoded.right : undefined, violation }
  }
}

export const targets: ReadonlyArray<Fuzz.Target> = [frames, messagesTarget, envelopes]
