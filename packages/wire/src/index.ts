/** The canonical binary codec for messages (WIRE.md). */
export * as Codec from "./Codec.js"

/** Signed envelopes carrying a message's origin through relays. */
export * as Envelope from "./Envelope.js"

/** Frames: header, batch, compression, and the incremental decoder. */
export * as Frame from "./Frame.js"

/** Identities: Ed25519 key pairs, PeerIds, signatures, key files. */
export * as Identity from "./Identity.js"

/** Every message validators exchange, as Schemas. */
export * as Message from "./Message.js"

/** Typed errors for bad bytes. */
export * as WireError from "./WireError.js"
