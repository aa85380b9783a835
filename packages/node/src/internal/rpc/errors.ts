// NodeRpc's errors, apart from its public face so that the internals need not import it back.
import * as Schema from "effect/Schema"

/**
 * The peer cannot answer now: it is not connected (`not-connected`), it disconnected while the
 * request was in flight (`disconnected`), its queue is full (`backpressure`), or this node's network
 * or client closed (`closed`). Nothing more will come for the request: ask another peer.
 */
export class RpcUnavailable extends Schema.TaggedError<RpcUnavailable>()("RpcUnavailable", {
  peer: Schema.String,
  reason: Schema.Literal("not-connected", "disconnected", "backpressure", "closed"),
  detail: Schema.String
}) {
  override get message() {
    return `peer ${this.peer.slice(0, 8)} cannot answer (${this.reason}): ${this.detail}`
  }
}

/** No answer within the client's `timeout`: the request was interrupted at the server. */
export class RpcTimeout extends Schema.TaggedError<RpcTimeout>()("RpcTimeout", {
  peer: Schema.String,
  rpc: Schema.String,
  timeoutMillis: Schema.Number
}) {
  override get message() {
    return `peer ${this.peer.slice(0, 8)} did not answer ${this.rpc} within ${this.timeoutMillis} ms`
  }
}

/**
 * A request refused by a bound: at the server, `too-many-requests` (this node has `limit` requests
 * in flight there), `response-too-large` (the answer, `size` bytes of RPC data, is over the server's
 * `limit`), `not-served` (the peer serves no RPC); here, `request-too-large` (`size` over `limit`).
 */
export class RpcRefused extends Schema.TaggedError<RpcRefused>()("RpcRefused", {
  peer: Schema.String,
  reason: Schema.Literal("too-many-requests", "response-too-large", "not-served", "request-too-large"),
  limit: Schema.Number,
  size: Schema.optional(Schema.Number)
}) {
  override get message() {
    const size = this.size === undefined ? "" : ` (${this.size} bytes)`
    return `request to peer ${this.peer.slice(0, 8)} refused: ${this.reason}${size}, limit ${this.limit}`
  }
}

/** The peer's answer does not decode by the RPC's schemas: refused, and the peer was reported. */
export class RpcBadResponse extends Schema.TaggedError<RpcBadResponse>()("RpcBadResponse", {
  peer: Schema.String,
  rpc: Schema.String,
  detail: Schema.String
}) {
  override get message() {
    return `peer ${this.peer.slice(0, 8)} answered ${this.rpc} with what does not decode: ${this.detail}`
  }
}

/** What a `NodeRpc.client` request can fail with, besides the RPC's own error. */
export type RpcClientFailure = RpcUnavailable | RpcTimeout | RpcRefused | RpcBadResponse
