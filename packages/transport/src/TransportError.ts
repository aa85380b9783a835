/**
 * Typed errors of the transport. Each names the peer or address involved and the reason, so a log
 * line or a reputation penalty can be derived from it without guessing.
 */
import * as Schema from "effect/Schema"

/** Why a dial or an inbound handshake did not produce a connection. */
export const HandshakeFailure = Schema.Literal(
  /** No TCP connection (refused, unreachable). */
  "unreachable",
  /** The handshake did not finish within `handshakeTimeout`. */
  "timeout",
  /** TLS failed: not TLS (plaintext, garbage), no or a non-Ed25519 certificate, bad TLS version. */
  "tls",
  /** The remote key is not the expected one (dialer) or does not match its hello. */
  "identity-mismatch",
  /** The listener does not admit this peer (not a validator, banned). */
  "not-admitted",
  /** A hello for another network id. */
  "wrong-network",
  /** A hello for a protocol version this node does not speak. */
  "version",
  /** A hello whose timestamp is further than `maxClockSkew` from this node's clock. */
  "stale-hello",
  /** A hello nonce seen before. */
  "replayed-hello",
  /** A handshake signature that does not verify. */
  "bad-signature",
  /** Bytes that are not a handshake frame (garbage, a huge length prefix, a wrong message). */
  "protocol",
  /** The remote refused us and said why (the detail carries its reason). */
  "refused-by-remote",
  /** The connection closed during the handshake. */
  "closed",
  /** Over a limit: concurrent handshakes, inbound connections, connections per IP. */
  "over-limit"
)
export type HandshakeFailure = typeof HandshakeFailure.Type

/** A dial that did not give an authenticated connection. */
export class DialError extends Schema.TaggedError<DialError>()("DialError", {
  address: Schema.String,
  expectedPeer: Schema.String,
  reason: HandshakeFailure,
  detail: Schema.String
}) {
  override get message() {
    return `dial ${this.address} (expecting ${this.expectedPeer.slice(0, 8)}): ${this.reason}: ${this.detail}`
  }
}

/** An inbound connection the listener refused, and why. Reported on `Listener.refusals`. */
export class InboundRefused extends Schema.TaggedError<InboundRefused>()("InboundRefused", {
  remoteAddress: Schema.String,
  /** The remote's PeerId when it was learnt before the refusal. */
  peer: Schema.optional(Schema.String),
  reason: HandshakeFailure,
  detail: Schema.String
}) {
  override get message() {
    return `refused ${this.remoteAddress}${this.peer ? ` (${this.peer.slice(0, 8)})` : ""}: ${this.reason}: ${this.detail}`
  }
}

/** The address could not be listened on. */
export class ListenError extends Schema.TaggedError<ListenError>()("ListenError", {
  address: Schema.String,
  detail: Schema.String
}) {
  override get message() {
    return `listen on ${this.address}: ${this.detail}`
  }
}

/** A channel's outbound queue is full and its policy is to refuse. Nothing was queued. */
export class Backpressure extends Schema.TaggedError<Backpressure>()("Backpressure", {
  peer: Schema.String,
  channel: Schema.Number,
  queuedFrames: Schema.Number,
  queuedBytes: Schema.Number,
  maxFrames: Schema.Number,
  maxBytes: Schema.Number,
  /**
   * Which limit is full: the channel's queue to this peer (`queuedBytes` and `maxBytes` are the
   * queue's; the default), or the node's outbound budget over every connection (they are the node's).
   */
  limit: Schema.optional(Schema.Literal("channel", "node"))
}) {
  override get message() {
    return this.limit === "node"
      ? `backpressure to ${this.peer.slice(0, 8)} on channel ${this.channel}: the node has ${this.queuedBytes} bytes queued to all its peers (maxQueuedOutboundBytes ${this.maxBytes})`
      : `backpressure to ${this.peer.slice(0, 8)} on channel ${this.channel}: ${this.queuedFrames} frames / ${this.queuedBytes} bytes queued (limits ${this.maxFrames} / ${this.maxBytes})`
  }
}

/** A send on a connection that is closed or closing. */
export class ConnectionClosed extends Schema.TaggedError<ConnectionClosed>()("ConnectionClosed", {
  peer: Schema.String,
  reason: Schema.String
}) {
  override get message() {
    return `connection to ${this.peer.slice(0, 8)} is closed: ${this.reason}`
  }
}

/** A send on a channel the transport was not configured with. */
export class UnknownChannel extends Schema.TaggedError<UnknownChannel>()("UnknownChannel", {
  channel: Schema.Number
}) {
  override get message() {
    return `unknown channel ${this.channel}`
  }
}

/** A transport option out of its range. */
export class InvalidTransportConfig extends Schema.TaggedError<InvalidTransportConfig>()(
  "InvalidTransportConfig",
  { field: Schema.String, detail: Schema.String }
) {
  override get message() {
    return `transport config ${this.field}: ${this.detail}`
  }
}
