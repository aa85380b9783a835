// The broadcaster's reading of an inbound message slot, as a fuzz target: `Payload.parse` (the kind
// byte) and then, as the receive path does (src/internal/inbound.ts), the message codec on a bare
// body; the envelope decoder, the origin check, the signature and then the tree header or routed
// target and the message for an enveloped one; the receipt decoder; and for a forward its target,
// the relay's checks of the inner tree slot (envelope, origin, signature) and the target's reading of
// it; for a reliable slot its header and the inner slot as its stream hands it on (an envelope must be
// the sender's own). The bounded test (test/fuzz.test.ts) and `npm run fuzz` (run.ts) run it through
// the one engine in @hotstuff2/testing.
import { Fuzz } from "@hotstuff2/testing"
import { Codec, Envelope, Identity, Message } from "@hotstuff2/wire"
import * as Arbitrary from "effect/Arbitrary"
import * as Either from "effect/Either"
import * as fc from "effect/FastCheck"
import { Broadcaster } from "../../src/index.js"
import * as Payload from "../../src/internal/payload.js"
import {
  decodeReceipt,
  decodeRouted,
  decodeTreeHeader,
  encodeReceipt,
  encodeTreeHeader,
  MAX_DEMOTED,
  MAX_FANOUT,
  MAX_RECEIPT_SEQUENCES,
  MIN_FANOUT,
  type TreeHeader
} from "../../src/internal/tree/header.js"

/** The network id every fuzz envelope is sealed and opened under. */
const NETWORK = "fuzz"
const CORPUS_SEED = 20261124
/** The members of the epoch a tree header names, when the receiver knows them (half the cases). */
const MEMBERS = 20

const identity = Either.getOrThrow(Identity.fromSeed(new Uint8Array(32).fill(5)))
const outsider = Either.getOrThrow(Identity.fromSeed(new Uint8Array(32).fill(9)))
/** The validator set of the receiving node: envelopes from anyone else are refused before verifying. */
const validators = new Set<string>([identity.peerId])

const pick = <A>(random: Fuzz.Random, xs: ReadonlyArray<A>): A => xs[Fuzz.int(random, xs.length)]!
const hex = (bytes: Uint8Array) =>
  Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString("hex")
const same = (a: Uint8Array, b: Uint8Array) => Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(b)
/** Whether `part` is a view of the last bytes of `whole` (no copy). */
const isTail = (part: Uint8Array, whole: Uint8Array) =>
  part.buffer === whole.buffer && part.byteOffset + part.length === whole.byteOffset + whole.length
const concat = (...parts: ReadonlyArray<Uint8Array>): Uint8Array => Buffer.concat(parts)
const genericMutators = Object.values(Fuzz.mutators)
const mutate = (bytes: Uint8Array, random: Fuzz.Random, context: Fuzz.MutationContext) =>
  pick(random, genericMutators)(bytes, random, context)

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

const seal = (by: Identity.Identity, sequence: bigint, payload: Uint8Array) =>
  Either.getOrThrow(Envelope.seal(by, { networkId: NETWORK, sequence, payload })).bytes
const sealed = (by: Identity.Identity, sequence: bigint, payload: Uint8Array) =>
  Payload.envelope(seal(by, sequence, payload))

const U64_MAX = 2n ** 64n - 1n

const headers: ReadonlyArray<TreeHeader> = [
  { epoch: 0n, round: 0n, fanout: MIN_FANOUT, demoted: [] },
  { epoch: 2n, round: 42n, fanout: 4, demoted: [1, 3] },
  { epoch: 7n, round: 300n, fanout: 16, demoted: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9] },
  { epoch: U64_MAX, round: 2n ** 63n, fanout: MAX_FANOUT, demoted: [0, 127, 128, 16_383, 16_384, 0xffffffff] }
]

/** Keys a routed or forward slot names: a validator, an outsider, a tree member and a stranger. */
const targetKeys: ReadonlyArray<Uint8Array> = [
  Buffer.from(identity.peerId, "hex"),
  Buffer.from(outsider.peerId, "hex"),
  new Uint8Array(32).fill(0x13),
  Uint8Array.from({ length: 32 }, (_, i) => 0x60 + i)
]

/** The messages of the tree, routed and forward seeds: an eighth of the corpus (signatures cost). */
const some = encoded.filter((_, i) => i % 8 === 0)

const treeSlots = some.map((m, i) =>
  Payload.slot(
    Payload.TREE,
    seal(identity, BigInt(1000 + i), encodeTreeHeader(headers[i % headers.length]!, m))
  )
)
const outsiderTree = Payload.slot(
  Payload.TREE,
  seal(outsider, 1n, encodeTreeHeader(headers[1]!, encoded[0]!))
)
const routedSlots = some.map((m, i) =>
  Payload.slot(
    Payload.ROUTED,
    seal(identity, BigInt(2000 + i), concat(targetKeys[i % targetKeys.length]!, m))
  )
)
const outsiderRouted = Payload.slot(Payload.ROUTED, seal(outsider, 2n, concat(targetKeys[0]!, encoded[0]!)))
const receipts: ReadonlyArray<Uint8Array> = [
  [0n],
  [1n, 2n, 300n],
  [U64_MAX],
  [2n ** 63n, 127n, 128n, 16_383n, 16_384n],
  Array.from({ length: MAX_RECEIPT_SEQUENCES }, (_, i) => BigInt(i))
].map(encodeReceipt)

const bareSlots = messages.map((m) =>
  Either.getOrThrow(Codec.encodeAfter(Payload.directPrefix(undefined), m))
)
const tracedSlots = messages.map((m) => Either.getOrThrow(Codec.encodeAfter(Payload.directPrefix(trace), m)))
const envelopeSlots = encoded.map((m, i) => sealed(identity, BigInt(i), m))
const outsiderEnvelope = sealed(outsider, 1n, encoded[0]!)

/** Reliable headers (incarnation, sequence, floor): the vectors' values and the edges the receiver checks. */
const reliableHeaders: ReadonlyArray<readonly [bigint, bigint, bigint]> = [
  [0n, 1n, 0n],
  [0n, 1n, 1n],
  [1_700_000_000_000n, 42n, 42n],
  [1_700_000_000_000n, 51n, 3n],
  [2n ** 63n, 2n ** 32n, 1n],
  [U64_MAX, U64_MAX, U64_MAX]
]
/** The slots a reliable slot may carry: bare, traced and enveloped (by the validator, its sender). */
const reliableInners = [...bareSlots, ...tracedSlots, ...envelopeSlots]
/** An eighth of the corpus messages in each form, behind the reliable headers in turn. */
const reliableSlots = reliableInners
  .filter((_, i) => i % 8 === 0)
  .map((inner, i) => {
    const [incarnation, sequence, floor] = reliableHeaders[i % reliableHeaders.length]!
    return Payload.reliable(incarnation, sequence, floor, inner)
  })

/**
 * Every corpus message as a bare, traced and enveloped slot; an eighth of them as tree and routed
 * slots (sealed by the validator) and as forwards of those tree slots; receipts; an eighth of the
 * bare, traced and enveloped slots in reliable slots; and a broadcast, tree, routed, forward and
 * reliable slot from outside the validator set.
 */
export const slotSeeds: ReadonlyArray<Uint8Array> = [
  ...messages.flatMap((_, i) => [bareSlots[i]!, tracedSlots[i]!, envelopeSlots[i]!]),
  outsiderEnvelope,
  ...treeSlots,
  outsiderTree,
  ...routedSlots,
  outsiderRouted,
  ...receipts,
  ...treeSlots.map((tree, i) => Payload.forward(targetKeys[i % targetKeys.length]!, tree)),
  Payload.forward(targetKeys[2]!, outsiderTree),
  ...reliableSlots,
  Payload.reliable(1n, 1n, 1n, outsiderEnvelope)
]

// --- Format-aware pieces: field values at and past each limit the slot decoders check ---------------

/** Varints a canonical decoder refuses: overlong, past 32 bits, past 64 bits. */
const BAD_VARINTS: ReadonlyArray<Uint8Array> = [
  Uint8Array.of(0x80, 0x00),
  Uint8Array.of(0x81, 0x80, 0x00),
  Uint8Array.of(0xff, 0xff, 0xff, 0xff, 0x1f),
  Uint8Array.of(0xff, 0xff, 0xff, 0xff, 0xff, 0x01),
  Uint8Array.of(0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x00),
  Uint8Array.of(0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02),
  Uint8Array.of(0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x81, 0x00),
  Uint8Array.of(0x80)
]
const U32S = [0n, 1n, 2n, 127n, 128n, 255n, 16_383n, 16_384n, 0xffffffffn, 2n ** 32n]
const U64S = [0n, 1n, 42n, 127n, 128n, 2n ** 32n, 2n ** 53n, 2n ** 63n, U64_MAX, 2n ** 64n]
/** The values a fixed-width u64 can hold (a reliable header's fields). */
const FIXED_U64S = U64S.filter((v) => v <= U64_MAX)

/** A varint of one of `values` (canonical), or now and then one a decoder refuses. */
const varint = (random: Fuzz.Random, values: ReadonlyArray<bigint>): Uint8Array =>
  random() < 0.08 ? pick(random, BAD_VARINTS) : Fuzz.leb128(pick(random, values))

/** A message for after a header or target: valid, mutated, or none. */
const messageFor = (random: Fuzz.Random, context: Fuzz.MutationContext): Uint8Array => {
  const roll = random()
  if (roll < 0.7) return pick(random, encoded)
  if (roll < 0.92) return mutate(pick(random, encoded), random, context)
  return new Uint8Array(0)
}

/** Unsigned LEB128 of a safe integer, onto `out` (cheaper than a bigint's, for long lists). */
const pushVarint = (out: Array<number>, value: number): void => {
  while (value >= 0x80) {
    out.push((value % 128) | 0x80)
    value = Math.floor(value / 128)
  }
  out.push(value)
}
const pushBytes = (out: Array<number>, bytes: Uint8Array): void => {
  for (let i = 0; i < bytes.length; i++) out.push(bytes[i]!)
}

/** Tree header bytes: a valid one with one generic mutation, or one built field by field. */
const treeHeaderBytes = (random: Fuzz.Random, context: Fuzz.MutationContext): Uint8Array => {
  if (random() < 0.4) return mutate(encodeTreeHeader(pick(random, headers)), random, context)
  const out: Array<number> = []
  if (random() < 0.85) out.push(1)
  else pushBytes(out, varint(random, [0n, 2n, 0xffffffffn]))
  for (const most of [10, 1000]) {
    if (random() < 0.8) pushVarint(out, Fuzz.int(random, most))
    else pushBytes(out, varint(random, U64S))
  }
  if (random() < 0.6) pushVarint(out, 2 + Fuzz.int(random, 30))
  else pushBytes(out, varint(random, U32S))
  // Now and then a clean list at (or one past) the limit; else a few indices, mostly increasing and
  // below the members, sometimes past them, repeated or huge.
  const many = random() < 0.03
  const n = many ? MAX_DEMOTED + Fuzz.int(random, 2) : Fuzz.int(random, 9)
  if (random() < 0.85) pushVarint(out, n)
  else pushBytes(out, varint(random, [BigInt(n + 1), 4097n, 0xffffffffn]))
  let index = Fuzz.int(random, 3)
  for (let i = 0; i < n; i++) {
    const roll = many ? 0 : random()
    if (roll < 0.9) pushVarint(out, index)
    else if (roll < 0.95) out.push(0)
    else pushBytes(out, varint(random, U32S))
    index += 1 + Fuzz.int(random, many ? 2 : 4)
  }
  return Uint8Array.from(out)
}

/** A tree slot whose header was mutated, sealed by the validator: the header decoder runs on it. */
const mutatedTreeSlot = (random: Fuzz.Random, context: Fuzz.MutationContext): Uint8Array =>
  Payload.slot(
    Payload.TREE,
    seal(
      identity,
      BigInt(Fuzz.int(random, 2 ** 30)),
      concat(treeHeaderBytes(random, context), messageFor(random, context))
    )
  )

// --- Labels ------------------------------------------------------------------------------------------

/** Each refusal a slot decoder gives, by the words that name it. */
const REASONS: ReadonlyArray<readonly [RegExp, string]> = [
  [/cut short/, "cut short"],
  [/non-canonical varint/, "non-canonical varint"],
  [/exceeds (32|64) bits/, "varint too large"],
  [/version/, "version"],
  [/fanout/, "fanout"],
  [/demoted members, more than/, "too many demoted"],
  [/cannot fit/, "count cannot fit"],
  [/not strictly increasing/, "demoted not increasing"],
  [/past the/, "demoted past the members"],
  [/no message after|nothing after the target/, "no message"],
  [/sequences out of range/, "count out of range"],
  [/trailing bytes/, "trailing bytes"],
  [/not a tree slot/, "not a tree slot"],
  [/carries nothing/, "nothing after the header"],
  [/only 0x00, 0x01 and 0x02/, "inner kind"],
  [/sequence numbers start at 1/, "sequence 0"],
  [/floor \d+ is above the sequence \d+/, "floor above sequence"]
]

/** The label of a refusal, or a violation when the reason is none a decoder should give. */
const refusal = (what: string, reason: string): Fuzz.Outcome => {
  const known = REASONS.find(([words]) => words.test(reason))
  return known === undefined
    ? { label: `${what} refused`, violation: `${what}: a refusal that names no known reason: ${reason}` }
    : { label: `${what} refused: ${known[1]}` }
}

const KIND = ["direct", "traced", "envelope", "tree", "receipt", "routed", "forward", "reliable"] as const

const checkTree = (
  payload: Uint8Array,
  decoded: { readonly header: TreeHeader; readonly message: Uint8Array },
  members: number | undefined
): string | undefined => {
  if (!isTail(decoded.message, payload) || decoded.message.length === 0) {
    return "tree header: the message is not a non-empty view of the payload's tail"
  }
  if (members !== undefined && decoded.header.demoted.some((i) => i >= members)) {
    return `tree header: demoted ${decoded.header.demoted} accepted with ${members} members`
  }
  // The decoder takes canonical headers only, so what it accepts re-encodes to the same bytes.
  if (!same(encodeTreeHeader(decoded.header, decoded.message), payload)) {
    return "tree header: an accepted header does not re-encode to its bytes"
  }
  return undefined
}

/**
 * An envelope's body (a broadcast, tree or routed slot, or the tree slot in a forward): labels
 * `<what> Malformed`, `<what> unknown-origin`, `<what> BadSignature`, then for a tree slot
 * `<what> header refused…` and for a routed one `routed target refused…`, `<what> payload <tag>`,
 * `<what> ok`. The header decoder gets the epoch's member count in half the cases.
 */
const readEnveloped = (what: string, kind: number, body: Uint8Array, random: Fuzz.Random): Fuzz.Outcome => {
  const envelope = Envelope.decode(body)
  if (Either.isLeft(envelope)) return { label: `${what} Malformed` }
  if (!validators.has(envelope.right.origin)) return { label: `${what} unknown-origin` }
  const verified = Envelope.verify(envelope.right, NETWORK)
  if (Either.isLeft(verified)) return { label: `${what} BadSignature` }
  let payload = envelope.right.payload
  let violation: string | undefined
  if (kind === Payload.TREE) {
    const members = random() < 0.5 ? undefined : MEMBERS
    const tree = decodeTreeHeader(payload, members)
    if (typeof tree === "string") {
      // A forward's tree slot is the tree decoder again: one label for all its refusals.
      return what === "tree" ? refusal("tree header", tree) : { label: `${what} tree header refused` }
    }
    const whole = payload
    violation = Fuzz.unmetered(() => checkTree(whole, tree, members))
    payload = tree.message
  } else if (kind === Payload.ROUTED) {
    const routed = decodeRouted(payload)
    if (typeof routed === "string") return refusal("routed target", routed)
    const whole = payload
    violation = Fuzz.unmetered(() =>
      routed.target !== hex(whole.subarray(0, 32)) ||
      !isTail(routed.message, whole) ||
      routed.message.length !== whole.length - 32
        ? "routed: the target or message is not the payload's"
        : undefined
    )
    payload = routed.message
  }
  const message = Codec.decode(payload)
  if (Either.isLeft(message)) return { label: `${what} payload ${message.left._tag}`, violation }
  return { label: `${what} ok`, output: { envelope: envelope.right, message: message.right }, violation }
}

/** A forward's body: its target and inner slot, then the inner slot as relay and target read it. */
const readForward = (input: Uint8Array, body: Uint8Array, random: Fuzz.Random): Fuzz.Outcome => {
  const forward = Payload.parseForward(body)
  if (typeof forward === "string") return refusal("forward", forward)
  const inner = Payload.parse(forward.inner)
  const violation = Fuzz.unmetered(() => {
    if (forward.target !== hex(body.subarray(0, 32))) return "forward: a target not from the slot"
    if (!isTail(forward.inner, body) || forward.inner.length !== body.length - 32) {
      return "forward: the inner slot is not a view of the body after the target"
    }
    if (!same(Payload.forward(Buffer.from(forward.target, "hex"), forward.inner), input)) {
      return "forward: does not re-encode to its bytes"
    }
    if (typeof inner === "string" || inner.kind !== Payload.TREE)
      return "forward: passed a slot that is not a tree slot"
    return undefined
  })
  if (typeof inner === "string" || inner.kind !== Payload.TREE) return { label: "forward refused", violation }
  const read = readEnveloped("forward", Payload.TREE, inner.body, random)
  return {
    ...read,
    output: { target: forward.target, read: read.output },
    violation: violation ?? read.violation
  }
}

/** The peer whose connection carries every fuzzed slot: the validator (a reliable stream is its own). */
const sender = identity.peerId

/**
 * A reliable slot's body: its header, then the inner slot as the receiver reads it once the stream
 * hands it on (inbound.ts, `openHeld`): bare or traced, its message; enveloped, the envelope must be
 * the sender's own before anything else of it is looked at.
 */
const readReliable = (input: Uint8Array, body: Uint8Array, random: Fuzz.Random): Fuzz.Outcome => {
  const header = Payload.parseReliable(body)
  if (typeof header === "string") return refusal("reliable", header)
  const violation = Fuzz.unmetered(() => {
    const { incarnation, sequence, floor, inner } = header
    if (sequence === 0n || floor > sequence) {
      return `reliable: accepted sequence ${sequence} with floor ${floor}`
    }
    if (
      !isTail(inner, body) ||
      inner.length !== input.length - Payload.RELIABLE_HEADER ||
      inner.length === 0
    ) {
      return "reliable: the inner slot is not a non-empty view of the slot after the header"
    }
    const kind = inner[0]
    if (kind !== Payload.DIRECT && kind !== Payload.DIRECT_TRACED && kind !== Payload.ENVELOPE) {
      return `reliable: accepted an inner slot of kind ${kind}`
    }
    // Fixed-width fields: whatever is accepted re-encodes to the same bytes.
    if (!same(Payload.reliable(incarnation, sequence, floor, inner), input)) {
      return "reliable: does not re-encode to its bytes"
    }
    return undefined
  })
  const fields = { incarnation: header.incarnation, sequence: header.sequence, floor: header.floor }
  const inner = Payload.parse(header.inner)
  if (typeof inner === "string") return { label: `reliable inner refused: ${inner}`, violation }
  if (inner.kind === Payload.ENVELOPE) {
    const envelope = Envelope.decode(inner.body)
    if (Either.isLeft(envelope)) return { label: "reliable envelope Malformed", violation }
    if (envelope.right.origin !== sender) return { label: "reliable envelope not the sender's", violation }
    const read = readEnveloped("reliable envelope", Payload.ENVELOPE, inner.body, random)
    return { ...read, output: { ...fields, read: read.output }, violation: violation ?? read.violation }
  }
  const what = `reliable ${KIND[inner.kind]}`
  const decoded = Codec.decode(inner.body)
  if (Either.isLeft(decoded)) return { label: `${what} ${decoded.left._tag}`, violation }
  return { label: `${what} ok`, output: { ...fields, message: decoded.right }, violation }
}

const LABELS = {
  refused: [
    "refused: empty message slot",
    "refused: trace context cut short",
    "refused: unknown payload kind"
  ],
  bare: ["direct ok", "direct Malformed", "traced ok", "traced Malformed"],
  enveloped: ["envelope", "tree", "routed", "forward"].flatMap((what) => [
    `${what} ok`,
    `${what} Malformed`,
    `${what} BadSignature`,
    `${what} unknown-origin`,
    `${what} payload Malformed`
  ]),
  tree: [
    "forward tree header refused",
    ...[
      "cut short",
      "non-canonical varint",
      "varint too large",
      "version",
      "fanout",
      "too many demoted",
      "count cannot fit",
      "demoted not increasing",
      "demoted past the members",
      "no message"
    ].map((reason) => `tree header refused: ${reason}`)
  ],
  routed: ["routed target refused: cut short", "routed target refused: no message"],
  receipt: [
    "receipt ok",
    ...[
      "cut short",
      "non-canonical varint",
      "varint too large",
      "count out of range",
      "count cannot fit",
      "trailing bytes"
    ].map((reason) => `receipt refused: ${reason}`)
  ],
  forward: ["forward refused: cut short", "forward refused: not a tree slot"],
  reliable: [
    ...["cut short", "nothing after the header", "inner kind", "sequence 0", "floor above sequence"].map(
      (reason) => `reliable refused: ${reason}`
    ),
    "reliable inner refused: trace context cut short",
    "reliable direct ok",
    "reliable direct Malformed",
    "reliable traced ok",
    "reliable traced Malformed",
    "reliable envelope ok",
    "reliable envelope Malformed",
    "reliable envelope BadSignature",
    "reliable envelope payload Malformed",
    "reliable envelope not the sender's"
  ]
}

/**
 * A slot as the broadcaster reads it (without the per-peer state: dedup, channel, relaying and
 * reputation). Labels: "refused: <why>" (parse); "<kind> ok" or "<kind> <error tag>" for bare and
 * traced slots; the labels of `readEnveloped` for broadcast, tree and routed slots and for the tree
 * slot in a forward; "receipt ok" or "receipt refused: <why>"; "forward refused: <why>";
 * "reliable refused: <why>", then "reliable inner refused: <why>", "reliable <direct|traced> ok" or
 * "… <error tag>", "reliable envelope not the sender's" and `readEnveloped`'s labels for an envelope.
 * Properties: the kind is the slot's first byte; the body is a view of the slot's tail (no copy); a
 * trace is 16 + 8 bytes and a flags byte from the slot; whatever a tree header, receipt, forward or
 * reliable decoder accepts re-encodes to the same bytes (they take canonical forms only), and its
 * message or inner slot is a view of the rest; an accepted reliable header has a sequence of at
 * least 1, a floor at most the sequence and an inner slot of kind 0x00-0x02; a routed target is the
 * payload's first 32 bytes; each refusal names a known reason.
 */
export const slot: Fuzz.Target = {
  name: "broadcast-slot",
  seeds: slotSeeds,
  mutators: [
    // the kind byte: mostly one the parser knows (0x00..0x07), now and then any
    (input, random) => {
      const out = Uint8Array.from(input)
      if (out.length > 0) out[0] = random() < 0.8 ? Fuzz.int(random, 8) : Fuzz.int(random, 256)
      return out
    },
    // a mutated payload in a valid envelope from a validator: the payload decoder runs
    (_input, random, context) =>
      sealed(identity, BigInt(Fuzz.int(random, 2 ** 30)), mutate(pick(random, encoded), random, context)),
    // a valid trace context in front of a mutated message
    (_input, random, context) => {
      const body = mutate(pick(random, encoded), random, context)
      const prefix = Payload.directPrefix(random() < 0.5 ? trace : undefined)
      const out = new Uint8Array(prefix.length + body.length)
      out.set(prefix)
      out.set(body, prefix.length)
      return out
    },
    // a mutated tree header in a valid envelope from a validator: the header decoder runs
    (_input, random, context) => mutatedTreeSlot(random, context),
    // a routed target, whole, cut short or missing its message, in a valid envelope
    (_input, random, context) => {
      const target = pick(random, targetKeys)
      const cut = random() < 0.8 ? target : target.subarray(0, Fuzz.int(random, 33))
      const payload = concat(cut, random() < 0.15 ? new Uint8Array(0) : messageFor(random, context))
      return Payload.slot(Payload.ROUTED, seal(identity, BigInt(Fuzz.int(random, 2 ** 30)), payload))
    },
    // a receipt built field by field: counts and sequences at and past their limits
    (_input, random) => {
      const n = random() < 0.8 ? 1 + Fuzz.int(random, 8) : pick(random, [0, 255, 256, 257])
      const count = random() < 0.85 ? Fuzz.leb128(BigInt(n)) : varint(random, U32S)
      const listed = random() < 0.9 ? n : Math.max(0, n + pick(random, [-1, 1]))
      const out = [Payload.RECEIPT]
      pushBytes(out, count)
      for (let i = 0; i < listed; i++) {
        if (random() < 0.9) pushVarint(out, Fuzz.int(random, 2 ** 20))
        else pushBytes(out, varint(random, U64S))
      }
      if (random() < 0.1) pushBytes(out, Fuzz.randomBytes(random, 4))
      return Uint8Array.from(out)
    },
    // a forward: a target (sometimes cut short), then a valid, freshly mutated, damaged, outsider
    // or wrong-kind slot
    (_input, random, context) => {
      const target = pick(random, targetKeys)
      if (random() < 0.08) return Payload.slot(Payload.FORWARD, target.subarray(0, Fuzz.int(random, 32)))
      const roll = random()
      const inner =
        roll < 0.45
          ? pick(random, treeSlots)
          : roll < 0.6
            ? mutatedTreeSlot(random, context)
            : roll < 0.85
              ? mutate(pick(random, treeSlots), random, context)
              : roll < 0.92
                ? outsiderTree
                : pick(random, context.seeds)
      return Payload.forward(target, inner)
    },
    // the slot so far wrapped in a forward, or a forward's inner slot unwrapped (no signing: cheap)
    (input, random) =>
      input[0] === Payload.FORWARD && input.length > 33 && random() < 0.7
        ? input.subarray(33)
        : Payload.forward(pick(random, targetKeys), input),
    // a reliable header built field by field (values at and past the edges the receiver checks), then
    // a bare, traced or enveloped slot, one mutated, an outsider's envelope, a slot of another kind or
    // nothing; now and then cut short inside the header
    (_input, random, context) => {
      const incarnation = pick(random, FIXED_U64S)
      const sequence =
        random() < 0.08
          ? 0n
          : pick(
              random,
              FIXED_U64S.filter((v) => v > 0n)
            )
      const roll = random()
      const floor =
        roll < 0.45
          ? sequence
          : roll < 0.75
            ? pick(random, [0n, 1n, sequence > 0n ? sequence - 1n : 0n])
            : roll < 0.9 && sequence < U64_MAX
              ? sequence + 1n
              : pick(random, FIXED_U64S)
      const which = random()
      const inner =
        which < 0.45
          ? pick(random, reliableInners)
          : which < 0.75
            ? mutate(pick(random, reliableInners), random, context)
            : which < 0.82
              ? outsiderEnvelope
              : which < 0.94
                ? pick(random, context.seeds)
                : new Uint8Array(0)
      const slot = Payload.reliable(incarnation, sequence, floor, inner)
      return random() < 0.05 ? slot.subarray(0, Fuzz.int(random, Payload.RELIABLE_HEADER)) : slot
    },
    // the slot so far behind a reliable header, or a reliable slot's inner slot unwrapped (cheap)
    (input, random) => {
      if (input[0] === Payload.RELIABLE && input.length > Payload.RELIABLE_HEADER && random() < 0.7) {
        return input.subarray(Payload.RELIABLE_HEADER)
      }
      const [incarnation, sequence, floor] = pick(random, reliableHeaders)
      return Payload.reliable(incarnation, sequence, floor, input)
    }
  ],
  dictionary: [
    ...[
      Payload.DIRECT,
      Payload.DIRECT_TRACED,
      Payload.ENVELOPE,
      Payload.TREE,
      Payload.RECEIPT,
      Payload.ROUTED,
      Payload.FORWARD,
      Payload.RELIABLE
    ].map((kind) => Uint8Array.of(kind)),
    encodeTreeHeader(headers[1]!),
    // a reliable header without its kind byte, and one with it
    Payload.reliable(1_700_000_000_000n, 42n, 42n, new Uint8Array(0)).subarray(1),
    Payload.reliable(1n, 1n, 1n, new Uint8Array(0)),
    ...targetKeys.slice(0, 2)
  ],
  expected: [
    ...LABELS.refused,
    ...LABELS.bare,
    ...LABELS.enveloped,
    ...LABELS.tree,
    ...LABELS.routed,
    ...LABELS.receipt,
    ...LABELS.forward,
    ...LABELS.reliable
  ],
  run: (input, random) => {
    const parsed = Payload.parse(input)
    if (typeof parsed === "string") {
      return {
        label: `refused: ${parsed.startsWith("unknown payload kind") ? "unknown payload kind" : parsed}`
      }
    }
    const violation = Fuzz.unmetered(() => {
      if (parsed.kind !== input[0]) return `kind ${parsed.kind} from a slot starting ${input[0]}`
      const { body } = parsed
      if (!isTail(body, input)) return "the body is not a view of the slot's tail"
      if (parsed.trace !== undefined) {
        const { traceId, spanId, flags } = parsed.trace
        if (traceId.length !== 16 || spanId.length !== 8 || flags !== input[25])
          return "a malformed trace context"
        if (hex(traceId) !== hex(input.subarray(1, 17))) return "a trace id not from the slot"
      }
      return undefined
    })
    // The slot's own property first, then what the body's decoder broke.
    const withViolation = (outcome: Fuzz.Outcome): Fuzz.Outcome =>
      violation === undefined ? outcome : { ...outcome, violation }
    switch (parsed.kind) {
      case Payload.DIRECT:
      case Payload.DIRECT_TRACED: {
        const kind = KIND[parsed.kind]
        const decoded = Codec.decode(parsed.body)
        if (Either.isLeft(decoded)) return withViolation({ label: `${kind} ${decoded.left._tag}` })
        // What the broadcaster does next with a message: its channel, and a trace as hex for the span.
        const channel = Broadcaster.channelOf(decoded.right._tag)
        const span =
          parsed.trace === undefined ? undefined : hex(parsed.trace.traceId) + hex(parsed.trace.spanId)
        return withViolation({ label: `${kind} ok`, output: { message: decoded.right, channel, span } })
      }
      case Payload.RECEIPT: {
        const sequences = decodeReceipt(parsed.body)
        if (typeof sequences === "string") return withViolation(refusal("receipt", sequences))
        const canonical = Fuzz.unmetered(() =>
          same(encodeReceipt(sequences), input) ? undefined : "receipt: does not re-encode to its bytes"
        )
        return withViolation({ label: "receipt ok", output: sequences, violation: canonical })
      }
      case Payload.FORWARD:
        return withViolation(readForward(input, parsed.body, random))
      case Payload.RELIABLE:
        return withViolation(readReliable(input, parsed.body, random))
      default:
        return withViolation(readEnveloped(KIND[parsed.kind], parsed.kind, parsed.body, random))
    }
  }
}

export const targets: ReadonlyArray<Fuzz.Target> = [slot]
