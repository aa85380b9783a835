/**
 * Signed envelopes: how a message keeps its origin when others relay it. The origin signs the
 * envelope's canonical bytes under a domain that names the network, so a message from one network
 * can never be replayed on another. Receivers check the signature before they decode the payload.
 */
import * as crypto from "node:crypto"
import * as Either from "effect/Either"
import * as Option from "effect/Option"
import * as ParseResult from "effect/ParseResult"
import * as Schema from "effect/Schema"
import * as Codec from "./Codec.js"
import { type Identity, type PeerId, sign, verify as verifySignature } from "./Identity.js"
import { DecodeFailure, fromFailure, Reader, Writer } from "./internal/binary.js"
import * as F from "./internal/field.js"
import { compile } from "./internal/validator.js"
import { MAX_PAYLOAD_BYTES, type Message } from "./Message.js"
import { BadSignature, type EnvelopeError, Malformed } from "./WireError.js"

/** W3C trace context of the span that sent the envelope, so receive spans join the sender's trace. */
const TraceContextField = F.struct("TraceContext", {
  traceId: F.fixedBytes(16, "TraceId"),
  spanId: F.fixedBytes(8, "SpanId"),
  flags: F.u32
})
export const TraceContext = TraceContextField.schema
export interface TraceContext extends Schema.Schema.Type<typeof TraceContext> {}

/** The most a payload may take: a largest message plus room for its own headers. */
export const MAX_ENVELOPE_PAYLOAD_BYTES = MAX_PAYLOAD_BYTES + 64 * 1024

const bodyFields = {
  origin: F.peerId,
  sequence: F.u64,
  trace: F.option(TraceContextField),
  payload: F.bytes(MAX_ENVELOPE_PAYLOAD_BYTES)
}
const BodyField = F.struct("EnvelopeBody", bodyFields)
const EnvelopeField = F.struct("Envelope", { ...bodyFields, signature: F.signature })

/** A message (encoded, in `payload`) with its origin, the origin's sequence number and signature. */
export const Envelope = EnvelopeField.schema
export interface Envelope extends Schema.Schema.Type<typeof Envelope> {}

/** @internal Wire definitions, for WIRE.md's tests. */
export const definition = EnvelopeField

const validateEnvelope = Schema.validateEither(Envelope)
const isEnvelope = compile(Envelope.ast)

const check = (envelope: unknown): Malformed | undefined => {
  if (isEnvelope(envelope)) return undefined
  const validated = validateEnvelope(envelope)
  const [issue] = Either.isLeft(validated) ? ParseResult.ArrayFormatter.formatErrorSync(validated.left) : []
  return new Malformed({
    what: "Envelope",
    path: issue?.path.join(".") ?? "",
    offset: 0,
    reason: issue?.message ?? "invalid"
  })
}

/** Network ids are short printable ASCII, so two different ids never share a signature domain. */
const NETWORK_ID_RULE = "a network id is 1 to 64 characters of A-Z a-z 0-9 . _ -"
const validNetworkId = (id: string): boolean => /^[A-Za-z0-9._-]{1,64}$/.test(id)

const DOMAIN = "hotstuff2/envelope/v1/"
const prefixes = new Map<string, Buffer>()

/** The signature domain: a fixed tag, then the network id, length-prefixed. Cached per network. */
const domainPrefix = (networkId: string): Buffer => {
  let prefix = prefixes.get(networkId)
  if (prefix === undefined) {
    const id = Buffer.from(networkId, "utf8")
    prefix = Buffer.allocUnsafe(DOMAIN.length + 4 + id.length)
    prefix.write(DOMAIN, 0, "latin1")
    prefix.writeUInt32BE(id.length, DOMAIN.length)
    id.copy(prefix, DOMAIN.length + 4)
    if (prefixes.size < 64) prefixes.set(networkId, prefix)
  }
  return prefix
}

export interface SealOptions {
  readonly networkId: string
  readonly sequence: bigint
  readonly payload: Uint8Array
  readonly trace?: TraceContext | undefined
}

/** An envelope with its wire bytes, ready to send to any number of peers. */
export interface Sealed {
  readonly envelope: Envelope
  readonly bytes: Uint8Array
}

/**
 * Builds and signs an envelope. One allocation holds the domain prefix, the body and the signature;
 * the wire bytes are a view of it without the prefix.
 */
export const seal = (identity: Identity, options: SealOptions): Either.Either<Sealed, Malformed> => {
  const body = {
    origin: identity.peerId,
    sequence: options.sequence,
    trace: Option.fromNullable(options.trace),
    payload: options.payload
  }
  const invalid = check({ ...body, signature: new Uint8Array(64) })
  if (invalid !== undefined) return Either.left(invalid)
  if (!validNetworkId(options.networkId)) {
    return Either.left(
      new Malformed({ what: "Envelope", path: "networkId", offset: 0, reason: NETWORK_ID_RULE })
    )
  }
  const prefix = domainPrefix(options.networkId)
  const bodySize = BodyField.size(body)
  const buf = Buffer.allocUnsafe(prefix.length + bodySize + 64)
  prefix.copy(buf, 0)
  const writer = new Writer(buf)
  writer.pos = prefix.length
  BodyField.write(writer, body)
  const signature = sign(identity, buf.subarray(0, writer.pos))
  writer.bytes(signature)
  return Either.right({ envelope: { ...body, signature }, bytes: buf.subarray(prefix.length) })
}

/** The envelope's canonical bytes (the same as `seal` produced), after checking it with its Schema. */
export const encode = (envelope: Envelope): Either.Either<Uint8Array, Malformed> => {
  const invalid = check(envelope)
  if (invalid !== undefined) return Either.left(invalid)
  const buf = Buffer.allocUnsafe(EnvelopeField.size(envelope))
  EnvelopeField.write(new Writer(buf), envelope)
  return Either.right(buf)
}

/** Decodes an envelope's fields. The payload stays encoded and unverified: call `verify` next. */
export const decode = (bytes: Uint8Array): Either.Either<Envelope, Malformed> => {
  const reader = new Reader(bytes, 0, bytes.length)
  let envelope: Envelope
  try {
    envelope = EnvelopeField.read(reader)
  } catch (e) {
    if (e instanceof DecodeFailure) return Either.left(fromFailure("Envelope", e))
    throw e
  }
  if (reader.pos !== reader.end) {
    return Either.left(
      new Malformed({
        what: "Envelope",
        path: "",
        offset: reader.pos,
        reason: `${reader.end - reader.pos} trailing bytes after the envelope`
      })
    )
  }
  return Either.right(envelope)
}

/** Checks the origin's signature over the envelope under `networkId`. */
export const verify = (envelope: Envelope, networkId: string): Either.Either<Envelope, BadSignature> => {
  if (!validNetworkId(networkId)) {
    return Either.left(
      new BadSignature({ signer: envelope.origin, what: `envelope under an invalid network id` })
    )
  }
  const prefix = domainPrefix(networkId)
  const buf = Buffer.allocUnsafe(prefix.length + BodyField.size(envelope))
  prefix.copy(buf, 0)
  const writer = new Writer(buf)
  writer.pos = prefix.length
  BodyField.write(writer, envelope)
  return verifySignature(envelope.origin, buf, envelope.signature)
    ? Either.right(envelope)
    : Either.left(new BadSignature({ signer: envelope.origin, what: `envelope ${envelope.sequence}` }))
}

export interface Opened {
  readonly envelope: Envelope
  readonly message: Message
}

/** Decodes, verifies, then (and only then) decodes the payload as a `Message`. */
export const open = (bytes: Uint8Array, networkId: string): Either.Either<Opened, EnvelopeError> =>
  Either.flatMap(decode(bytes), (envelope) =>
    Either.flatMap(verify(envelope, networkId), () =>
      Either.map(Codec.decode(envelope.payload), (message) => ({ envelope, message }))
    )
  )

/** An envelope's id: SHA-256 of its origin and sequence number, 64 hex characters. Dedup key. */
export type EnvelopeId = string & { readonly EnvelopeId: unique symbol }

export const id = (envelope: { readonly origin: PeerId; readonly sequence: bigint }): EnvelopeId => {
  const buf = Buffer.allocUnsafe(40)
  buf.write(envelope.origin, 0, 32, "hex")
  buf.writeBigUInt64BE(envelope.sequence, 32)
  return crypto.createHash("sha256").update(buf).digest("hex") as EnvelopeId
}
