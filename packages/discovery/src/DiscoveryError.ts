/**
 * Typed reasons for what discovery refuses: a peer record (from gossip or a bootstrap node), a DNS
 * answer, an exchange request. Each is counted by reason; one that a connected peer sent costs that
 * peer reputation. Nothing already known is lost by a refusal.
 */
import * as Schema from "effect/Schema"

/** Why a peer record was refused. */
export const RecordRefusal = Schema.Literal(
  /** It does not decode, or is not a `PeerRecord`. */
  "malformed",
  /** Signed for another network. */
  "wrong-network",
  /** The signature is not the named peer's over the record. */
  "bad-signature",
  /** Not newer than the record held for that peer (a replay, or an old copy). */
  "stale",
  /** Its sequence (signing time) is further ahead of this node's clock than `maxFutureSkew`. */
  "future",
  /** None of its addresses may be dialled (loopback, unspecified, multicast, malformed). */
  "bad-address",
  /** A non-validator's record while non-validators are not kept, or their subnet or the book is full. */
  "not-kept",
  /** This node's own key: only this node signs its record. */
  "own-record"
)
export type RecordRefusal = typeof RecordRefusal.Type

/** A peer record refused, with who sent it (when a peer did) and why. */
export class RecordRefused extends Schema.TaggedError<RecordRefused>()("RecordRefused", {
  /** The peer the record describes, when it decoded. */
  peer: Schema.optional(Schema.String),
  /** The connected peer that sent it; none for a bootstrap answer not yet tied to a key. */
  from: Schema.optional(Schema.String),
  reason: RecordRefusal,
  detail: Schema.String
}) {
  override get message() {
    return `peer record${this.peer ? ` of ${this.peer.slice(0, 8)}` : ""} refused (${this.reason}): ${this.detail}`
  }
}

/** Why a DNS address was not used. */
export const DnsRefusal = Schema.Literal(
  /** The query failed (timeout, SERVFAIL, NXDOMAIN...): the last good answer is kept. */
  "failed",
  /** More records than `maxRecords`: the rest were not read. */
  "truncated",
  /** An address that may not be dialled (loopback, unspecified, multicast, link-local). */
  "bad-address"
)
export type DnsRefusal = typeof DnsRefusal.Type
