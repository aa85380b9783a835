// The broadcaster's reading of an inbound message slot, as a fuzz target: `Payload.parse` (the kind
// byte: bare, traced or enveloped) and then, as the broadcaster's receive path does, the message codec
// on a bare body, or the envelope decoder, the origin check, the signature and the payload decoder.
// The bounded test (test/fuzz.test.ts) and `npm run fuzz` (run.ts) run it through the one engine in
// @hotstuff2/testing.
import { Fuzz } from "@hotstuff2/testing"
import { Codec, Envelope, Identity, Message } from "@hotstuff2/wire"
import * as Arbitrary from "effect/Arbitrary"
import * as Either from "effect/Either"
import * as fc from "effect/FastCheck"
import { Broadcaster } from "../../src/index.js"
import * as Payload from "../../src/internal/payload.js"
import { decodeReceipt, decodeRouted, decodeTreeHeader } from "../../src/internal/tree/header.js"

/** The network id every fuzz envelope is sealed and opened under. */
const NETWORK = "fuzz"
const CORPUS_SEED = 20261124

const identity = Either.getOrThrow(Identity.fromSeed(new Uint8Array(32).fill(5)))
const outsider = Either.getOrThrow(Identity.fromSeed(new Uint8Array(32).fill(9)))
/** The validator set of the receiving node: envelopes from anyone else are refused before verifying. */
const validators = new Set<string>([identity.peerId])

const pick = <A>(random: Fuzz.Random, xs: ReadonlyArray<A>): A => xs[Fuzz.int(random, xs.length)]!
const hex = (bytes: Uint8Array) =>
  Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString("hex")
const genericMutators = Object.values(Fuzz.mutators)

const trace: Envelope.TraceContext = {
  traceId: Uint8Array.from({ length: 16 }, (_, i) => i + 1),
  spanId: Uint8Array.from({ length: 8 }, (_, i) => 0xa0 + i),
  flags: 1
}

const messages: ReadonlyArray<Message.Message> = fc.sample(Arbitrary.make(Message.Message), {
  seed: CORPUS_SEED,
  numRuns: 100
})
const encoded = messages.map((m) => Either.getOrThrow(Codec.encode(m)))

const sealed = (by: Identity.Identity, sequence: bigint, payload: Uint8Array) =>
  Payload.envelope(Either.getOrThrow(Envelope.seal(by, { networkId: NETWORK, sequence, payload })).bytes)

/** Every corpus message as the three kinds of slot, and an envelope from outside the validator set. */
export const slotSeeds: ReadonlyArray<Uint8Array> = [
  ...messages.flatMap((m, i) => [
    Either.getOrThrow(Codec.encodeAfter(Payload.directPrefix(undefined), m)),
    Either.getOrThrow(Codec.encodeAfter(Payload.directPrefix(trace), m)),
    sealed(identity, BigInt(i), encoded[i]!)
  ]),
  sealed(outsider, 1n, encoded[0]!)
]

const KIND = ["direct", "traced", "envelope", "tree", "receipt", "routed", "forward"] as const

/**
 * A slot as the broadcaster reads it (without the per-peer state: dedup, channel and reputation).
 * Labels: "refused: <why>" (parse), "<kind> ok" or "<kind> <error tag>" for bare and traced slots,
 * and for envelopes "envelope Malformed", "envelope unknown-origin", "envelope BadSignature",
 * "envelope payload <tag>", "envelope ok". Properties: the kind is the slot's first byte; the body is
 * a view of the slot's tail (no copy); a trace is 16 + 8 bytes and a flags byte from the slot.
 */
export const slot: Fuzz.Target = {
  name: "broadcast-slot",
  seeds: slotSeeds,
  mutators: [
    (input, random) => {
      const out = Uint8Array.from(input)
      if (out.length > 0) out[0] = random() < 0.8 ? Fuzz.int(random, 4) : Fuzz.int(random, 256)
      return out
    },
    // a mutated payload in a valid envelope from a validator: the payload decoder runs
    (_input, random, context) =>
      sealed(
        identity,
        BigInt(Fuzz.int(random, 2 ** 30)),
        pick(random, genericMutators)(pick(random, encoded), random, context)
      ),
    // a valid trace context in front of a mutated message
    (_input, random, context) => {
      const body = pick(random, genericMutators)(pick(random, encoded), random, context)
      const prefix = Payload.directPrefix(random() < 0.5 ? trace : undefined)
      const out = new Uint8Array(prefix.length + body.length)
      out.set(prefix)
      out.set(body, prefix.length)
      return out
    }
  ],
  dictionary: [
    Uint8Array.of(Payload.DIRECT),
    Uint8Array.of(Payload.DIRECT_TRACED),
    Uint8Array.of(Payload.ENVELOPE)
  ],
  expected: [
    "refused: empty message slot",
    "refused: trace context cut short",
    "refused: unknown payload kind",
    "direct ok",
    "direct Malformed",
    "traced ok",
    "traced Malformed",
    "envelope ok",
    "envelope Malformed",
    "envelope BadSignature",
    "envelope unknown-origin",
    "envelope payload Malformed"
  ],
  run: (input) => {
    const parsed = Payload.parse(input)
    if (typeof parsed === "string") {
      return {
        label: `refused: ${parsed.startsWith("unknown payload kind") ? "unknown payload kind" : parsed}`
      }
    }
    const violation = Fuzz.unmetered(() => {
      if (parsed.kind !== input[0]) return `kind ${parsed.kind} from a slot starting ${input[0]}`
      const { body } = parsed
      if (body.buffer !== input.buffer || body.byteOffset + body.length !== input.byteOffset + input.length) {
        return "the body is not a view of the slot's tail"
      }
      if (parsed.trace !== undefined) {
        const { traceId, spanId, flags } = parsed.trace
        if (traceId.length !== 16 || spanId.length !== 8 || flags !== input[25])
          return "a malformed trace context"
        if (hex(traceId) !== hex(input.subarray(1, 17))) return "a trace id not from the slot"
      }
      return undefined
    })
    const kind = KIND[parsed.kind]
    if (parsed.kind === Payload.RECEIPT) {
      const sequences = decodeReceipt(parsed.body)
      return typeof sequences === "string"
        ? { label: "receipt refused", violation }
        : { label: "receipt ok", output: sequences, violation }
    }
    if (parsed.kind === Payload.FORWARD) {
      const forward = Payload.parseForward(parsed.body)
      return typeof forward === "string"
        ? { label: "forward refused", violation }
        : { label: "forward ok", output: forward.target, violation }
    }
    if (parsed.kind === Payload.DIRECT || parsed.kind === Payload.DIRECT_TRACED) {
      const decoded = Codec.decode(parsed.body)
      if (Either.isLeft(decoded)) return { label: `${kind} ${decoded.left._tag}`, violation }
      // What the broadcaster does next with a message: its channel, and a trace as hex for the span.
      const channel = Broadcaster.channelOf(decoded.right._tag)
      const span =
        parsed.trace === undefined ? undefined : hex(parsed.trace.traceId) + hex(parsed.trace.spanId)
      return { label: `${kind} ok`, output: { message: decoded.right, channel, span }, violation }
    }
    const envelope = Envelope.decode(parsed.body)
    if (Either.isLeft(envelope)) return { label: "envelope Malformed", violation }
    if (!validators.has(envelope.right.origin)) return { label: "envelope unknown-origin", violation }
    const verified = Envelope.verify(envelope.right, NETWORK)
    if (Either.isLeft(verified)) return { label: "envelope BadSignature", violation }
    let payload = envelope.right.payload
    if (parsed.kind === Payload.TREE) {
      const tree = decodeTreeHeader(payload)
      if (typeof tree === "string") return { label: "tree header refused", violation }
      payload = tree.message
    } else if (parsed.kind === Payload.ROUTED) {
      const routed = decodeRouted(payload)
      if (typeof routed === "string") return { label: "routed target refused", violation }
      payload = routed.message
    }
    const message = Codec.decode(payload)
    if (Either.isLeft(message)) return { label: `envelope payload ${message.left._tag}`, violation }
    return { label: "envelope ok", output: { envelope: envelope.right, message: message.right }, violation }
  }
}

export const targets: ReadonlyArray<Fuzz.Target> = [slot]
