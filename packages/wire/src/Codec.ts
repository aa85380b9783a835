/**
 * The canonical binary codec for `Message`s (specified in WIRE.md): one type byte, then the fields in
 * declaration order as varints, fixed and length-prefixed bytes; no field names, no JSON. Canonical:
 * a message has exactly one encoding, and the decoder accepts only that one, so signatures over
 * encodings and ids derived from them are stable.
 */
import * as Context from "effect/Context"
import type * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Layer from "effect/Layer"
import * as ParseResult from "effect/ParseResult"
import * as Schema from "effect/Schema"
import type { Deferred } from "./Frame.js"
import { allocate, DecodeFailure, fromFailure, Reader, Writer } from "./internal/binary.js"
import { type CompiledMessage, compileMessage } from "./internal/compiled.js"
import type { Fields, MessageField } from "./internal/field.js"
import { compile, type Predicate } from "./internal/validator.js"
import { definitions, type Message, type MessageTag } from "./Message.js"
import { Malformed, UnknownMessageType } from "./WireError.js"

type Definition = MessageField<MessageTag, Fields, Schema.Schema.Any>

interface Compiled {
  readonly definition: Definition
  /** The Schema compiled to a predicate: the fast path. */
  readonly is: Predicate
  /** Effect's validator: run only when `is` says no, for the detailed error. */
  readonly validate: (u: unknown) => Either.Either<unknown, ParseResult.ParseError>
  /** Reader, size and writer generated for this message type; `definition` is their reference. */
  readonly fast: CompiledMessage
}

// Built once at module load: Schema validators are costly to build and cheap to run.
const byType: Array<Compiled | undefined> = new Array(256)
const byTag = new Map<string, Compiled>()
for (const definition of definitions) {
  const compiled: Compiled = {
    definition,
    is: compile(definition.schema.ast),
    validate: Schema.validateEither(definition.schema as Schema.Schema<unknown>),
    fast: compileMessage(definition.emit)
  }
  byType[definition.type] = compiled
  byTag.set(definition.tag, compiled)
}

/** The one-byte type code of each message type, as WIRE.md lists them. */
export const typeCodes: ReadonlyMap<MessageTag, number> = new Map(definitions.map((d) => [d.tag, d.type]))

const fromParseError = (what: string, error: ParseResult.ParseError, offset: number): Malformed => {
  const [issue] = ParseResult.ArrayFormatter.formatErrorSync(error)
  return new Malformed({
    what,
    path: issue ? issue.path.join(".") : "",
    offset,
    reason: issue ? issue.message : error.message
  })
}

/** The Schema's verdict on a value: the compiled predicate, then Effect's validator for the error. */
const check = (compiled: Compiled, value: unknown): Malformed | undefined => {
  if (compiled.is(value)) return undefined
  const validated = compiled.validate(value)
  return Either.isLeft(validated)
    ? fromParseError(compiled.definition.tag, validated.left, 0)
    : new Malformed({
        what: compiled.definition.tag,
        path: "",
        offset: 0,
        reason: "refused by the compiled validator"
      })
}

const writeChecked = (
  compiled: Compiled,
  message: Message,
  prefix: Uint8Array | undefined
): Either.Either<Uint8Array, Malformed> => {
  const invalid = check(compiled, message)
  if (invalid !== undefined) return Either.left(invalid)
  const fast = compiled.fast
  const before = prefix === undefined ? 0 : prefix.length
  const buf = allocate(before + 1 + fast.size(message))
  const writer = new Writer(buf)
  if (prefix !== undefined) writer.bytes(prefix)
  writer.u8(compiled.definition.type)
  fast.write(writer, message)
  return Either.right(buf)
}

const lookup = (message: Message): Compiled | undefined =>
  byTag.get((message as { _tag?: unknown })?._tag as string)

const unknownTag = () =>
  Either.left(new Malformed({ what: "Message", path: "_tag", offset: 0, reason: "not a known message type" }))

/**
 * Encodes a message. The message is validated by its Schema first, so a value the type system
 * let through (a 31-byte hash, a view above 2^64-1) is a `Malformed` error here rather than bytes
 * that every peer would refuse.
 */
export const encode = (message: Message): Either.Either<Uint8Array, Malformed> => {
  const compiled = lookup(message)
  return compiled === undefined ? unknownTag() : writeChecked(compiled, message, undefined)
}

/**
 * `prefix`, then `encode(message)`, in one buffer: a caller that puts a few bytes of its own in
 * front of each message (a payload kind, a trace context) saves a copy of the whole message.
 * Validated, and failing, exactly as `encode`.
 */
export const encodeAfter = (prefix: Uint8Array, message: Message): Either.Either<Uint8Array, Malformed> => {
  const compiled = lookup(message)
  return compiled === undefined ? unknownTag() : writeChecked(compiled, message, prefix)
}

/** A checked message, written into its frame when the frame is built (see `encodeLater`). */
class Later implements Deferred {
  constructor(
    private readonly compiled: Compiled,
    private readonly message: Message,
    private readonly prefix: Uint8Array | undefined,
    readonly length: number
  ) {}

  verify(): boolean {
    try {
      return (
        this.compiled.is(this.message) &&
        (this.prefix?.length ?? 0) + 1 + this.compiled.fast.size(this.message) === this.length
      )
    } catch {
      return false
    }
  }

  writeTo(target: Buffer, offset: number): void {
    const writer = new Writer(target)
    writer.pos = offset
    try {
      if (this.prefix !== undefined) writer.bytes(this.prefix)
      writer.u8(this.compiled.definition.type)
      this.compiled.fast.write(writer, this.message)
    } catch {
      writer.pos = -1
    }
    // Changed since it was checked, and written by a builder that did not `verify` it first: zeros in
    // its place, which the receiver refuses as one bad message.
    if (writer.pos !== offset + this.length) target.fill(0, offset, offset + this.length)
  }
}

/**
 * `encodeAfter(prefix, message)` checked now and written later, straight into the frame that carries
 * it (a `Frame.Deferred`), without a buffer of its own: one allocation and one copy of the message
 * fewer. Validated, and failing, exactly as `encode`. The message is read again when the frame is
 * built (for a connection, at the latest at the end of the sender's turn), so it must not change
 * meanwhile: messages are immutable values. A connection calls `verify` when it builds the frame: a
 * message that changed anyway (no longer valid, or no longer of the checked length) is left out of
 * the frame, counted and never sent.
 */
export const encodeLater = (
  prefix: Uint8Array | undefined,
  message: Message
): Either.Either<Deferred, Malformed> => {
  const compiled = lookup(message)
  if (compiled === undefined) return unknownTag()
  const invalid = check(compiled, message)
  if (invalid !== undefined) return Either.left(invalid)
  const before = prefix === undefined ? 0 : prefix.length
  return Either.right(new Later(compiled, message, prefix, before + 1 + compiled.fast.size(message)))
}

/**
 * @internal `encode` through the generic field closures of internal/field.ts instead of the generated
 * writer: the reference the property tests hold `encode` to.
 */
export const referenceEncode = (message: Message): Either.Either<Uint8Array, Malformed> => {
  const compiled = lookup(message)
  if (compiled === undefined) return unknownTag()
  const definition = compiled.definition
  const invalid = check(compiled, message)
  if (invalid !== undefined) return Either.left(invalid)
  const buf = Buffer.allocUnsafe(1 + definition.size(message))
  const writer = new Writer(buf)
  writer.u8(definition.type)
  definition.write(writer, message)
  return Either.right(buf)
}

/**
 * Decodes one message from `bytes` (all of them: trailing bytes are an error) and validates it with
 * its Schema. Byte fields of the result are views into `bytes`, which must not be modified after.
 */
export const decode = (bytes: Uint8Array): Either.Either<Message, UnknownMessageType | Malformed> => {
  const compiled = bytes.length === 0 ? undefined : byType[bytes[0]!]
  if (compiled === undefined) return referenceDecode(bytes)
  const reader = new Reader(bytes, 1, bytes.length)
  let value: unknown
  try {
    value = compiled.fast.read(reader)
  } catch (e) {
    // Every error comes from the reference path, which knows the field path of a failure.
    if (e instanceof DecodeFailure) return referenceDecode(bytes)
    throw e
  }
  if (reader.pos !== reader.end) return referenceDecode(bytes)
  // The reader guarantees every length, range, count and encoding by construction; what is left to
  // check (a certificate's signers against its signatures) is `residual`. Failing that, the whole
  // Schema judges, for the detailed error.
  if (compiled.fast.residual(value)) return Either.right(value as Message)
  const invalid = check(compiled, value)
  return invalid === undefined ? Either.right(value as Message) : Either.left(invalid)
}

/**
 * @internal `decode` through the generic field closures of internal/field.ts and the whole Schema:
 * the reference the property tests hold `decode` to, and the source of `decode`'s errors.
 */
export const referenceDecode = (
  bytes: Uint8Array
): Either.Either<Message, UnknownMessageType | Malformed> => {
  if (bytes.length === 0) {
    return Either.left(new Malformed({ what: "Message", path: "", offset: 0, reason: "empty input" }))
  }
  const compiled = byType[bytes[0]!]
  if (compiled === undefined) return Either.left(new UnknownMessageType({ type: bytes[0]! }))
  const definition = compiled.definition
  const reader = new Reader(bytes, 1, bytes.length)
  let value: unknown
  try {
    value = definition.read(reader)
  } catch (e) {
    if (e instanceof DecodeFailure) return Either.left(fromFailure(definition.tag, e))
    throw e
  }
  if (reader.pos !== reader.end) {
    return Either.left(
      new Malformed({
        what: definition.tag,
        path: "",
        offset: reader.pos,
        reason: `${reader.end - reader.pos} trailing bytes after the message`
      })
    )
  }
  const invalid = check(compiled, value)
  return invalid === undefined ? Either.right(value as Message) : Either.left(invalid)
}

const SIGNING_DOMAIN = Buffer.from("hotstuff2/message/v1/", "latin1")

/**
 * The bytes a consensus signature covers: a domain prefix, the type byte, and the canonical encoding
 * of every field but the trailing `signature`. For a message without a `signature` field it is the
 * domain prefix and the whole encoding.
 */
export const signingBytes = (message: Message): Either.Either<Uint8Array, Malformed> =>
  Either.flatMap(encode(message), (encoded) => {
    const definition = byTag.get(message._tag)!.definition
    const names = definition.names
    const signed = names[names.length - 1] === "signature" ? encoded.length - 64 : encoded.length
    const out = Buffer.allocUnsafe(SIGNING_DOMAIN.length + signed)
    SIGNING_DOMAIN.copy(out, 0)
    out.set(encoded.subarray(0, signed), SIGNING_DOMAIN.length)
    return Either.right(out)
  })

/** The codec as a service, for code that wants it injected (and replaced in tests). */
export interface CodecShape {
  readonly encode: (message: Message) => Effect.Effect<Uint8Array, Malformed>
  readonly decode: (bytes: Uint8Array) => Effect.Effect<Message, UnknownMessageType | Malformed>
}

export class Codec extends Context.Tag("@hotstuff2/wire/Codec")<Codec, CodecShape>() {
  /** The canonical binary codec of WIRE.md. */
  static readonly layer: Layer.Layer<Codec> = Layer.succeed(Codec, {
    encode: (message) => encode(message),
    decode: (bytes) => decode(bytes)
  })
}
