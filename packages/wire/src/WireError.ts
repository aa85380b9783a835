/**
 * Typed errors for everything that can go wrong with bytes from the wire. Each says what happened
 * and the value or limit involved; none is ever thrown: decoders return them.
 */
import * as Schema from "effect/Schema"

/** A frame's declared body length is over the configured limit; nothing was allocated for it. */
export class FrameTooLarge extends Schema.TaggedError<FrameTooLarge>()("FrameTooLarge", {
  channel: Schema.Number,
  size: Schema.Number,
  limit: Schema.Number
}) {
  override get message() {
    return `frame on channel ${this.channel} declares ${this.size} bytes, over the limit of ${this.limit}`
  }
}

/** A compressed frame declares (or inflates to) more bytes than the configured limit. */
export class DecompressedTooLarge extends Schema.TaggedError<DecompressedTooLarge>()("DecompressedTooLarge", {
  channel: Schema.Number,
  size: Schema.Number,
  limit: Schema.Number
}) {
  override get message() {
    return `compressed frame on channel ${this.channel} declares ${this.size} bytes once inflated, over the limit of ${this.limit}`
  }
}

/** A frame header names a protocol version this node does not speak. */
export class UnknownVersion extends Schema.TaggedError<UnknownVersion>()("UnknownVersion", {
  version: Schema.Number,
  supported: Schema.Array(Schema.Number)
}) {
  override get message() {
    return `unknown wire version ${this.version} (supported: ${this.supported.join(", ")})`
  }
}

/** A message starts with a type byte that names no message type. */
export class UnknownMessageType extends Schema.TaggedError<UnknownMessageType>()("UnknownMessageType", {
  type: Schema.Number
}) {
  override get message() {
    return `unknown message type 0x${this.type.toString(16).padStart(2, "0")}`
  }
}

/** Bytes that do not form a valid value: where (field path and byte offset) and why. */
export class Malformed extends Schema.TaggedError<Malformed>()("Malformed", {
  what: Schema.String,
  path: Schema.String,
  offset: Schema.Number,
  reason: Schema.String
}) {
  override get message() {
    return `malformed ${this.what} at ${this.path || "<root>"} (byte ${this.offset}): ${this.reason}`
  }
}

/** A signature that does not verify against the key it claims. */
export class BadSignature extends Schema.TaggedError<BadSignature>()("BadSignature", {
  signer: Schema.String,
  what: Schema.String
}) {
  override get message() {
    return `bad signature by ${this.signer.slice(0, 16)} on ${this.what}`
  }
}

/** Text that is not a PeerId. */
export class InvalidPeerId extends Schema.TaggedError<InvalidPeerId>()("InvalidPeerId", {
  input: Schema.String,
  reason: Schema.String
}) {
  override get message() {
    return `invalid PeerId "${this.input}": ${this.reason}`
  }
}

/** Key material that is not an Ed25519 key. */
export class InvalidKey extends Schema.TaggedError<InvalidKey>()("InvalidKey", {
  reason: Schema.String
}) {
  override get message() {
    return `invalid Ed25519 key: ${this.reason}`
  }
}

/** A key file that cannot be written or read, or is not safe to use. */
export class IdentityFileError extends Schema.TaggedError<IdentityFileError>()("IdentityFileError", {
  path: Schema.String,
  reason: Schema.String
}) {
  override get message() {
    return `key file ${this.path}: ${this.reason}`
  }
}

/** Why a message could not be decoded. */
export type DecodeError = UnknownMessageType | Malformed

/** Why a frame could not be decoded; after any of these the byte stream cannot be trusted further. */
export type FrameError = FrameTooLarge | DecompressedTooLarge | UnknownVersion | Malformed

/** Why an envelope could not be opened. */
export type EnvelopeError = Malformed | BadSignature | DecodeError
