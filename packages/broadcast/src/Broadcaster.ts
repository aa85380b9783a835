/**
 * One-to-many for validators. `broadcast` and `multicast` seal a message once in an `Envelope`
 * (origin, per-origin sequence number, signature over the network id) and queue it to each peer
 * through that peer's own queues, in parallel: a slow or absent peer never delays the others.
 * Receivers verify the origin's signature, drop duplicates by envelope id, and deliver each message
 * once. `send` is point to point and rides bare: the connection already authenticates its sender.
 */
import type { PeerManager, PeerRegistry } from "@hotstuff2/peers"
import { Codec, type Envelope, type Identity, type Message } from "@hotstuff2/wire"
import type * as Chunk from "effect/Chunk"
import * as Context from "effect/Context"
import type * as Duration from "effect/Duration"
import type * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Layer from "effect/Layer"
import * as Schema from "effect/Schema"
import type * as Scope from "effect/Scope"
import type * as Stream from "effect/Stream"
import type * as Tracer from "effect/Tracer"
import type { BroadcastConfigInput, InvalidBroadcastConfig, Strategy } from "./BroadcastConfig.js"
import * as internal from "./internal/broadcaster.js"
import * as Payload from "./internal/payload.js"

export type PeerId = Identity.PeerId

/** A message delivered to this node, once. */
export interface Delivery {
  /** The peer whose connection carried it (this node itself for a loopback `send`). */
  readonly from: PeerId
  /** Who created it: the envelope's signer for a broadcast, `from` for a point-to-point message. */
  readonly origin: PeerId
  readonly message: Message.Message
  /** The channel it arrived on (by its type: see `channelOf`). */
  readonly channel: number
  /** The origin's sequence number for a broadcast or multicast; undefined for `send`. */
  readonly sequence: bigint | undefined
  /** The sender's trace context, when it sent one: receive spans are its children. */
  readonly trace: Envelope.TraceContext | undefined
  /** Bytes on the wire for this message (its slot in the frame). */
  readonly size: number
  /**
   * A reliable message's place in its origin's reliable stream to this node: delivered once per
   * (origin, incarnation, sequence), in sequence order. Undefined for unreliable traffic.
   */
  readonly reliable?: { readonly incarnation: bigint; readonly sequence: bigint } | undefined
}

/** Why a message from a peer was refused (it was not delivered, and the peer was reported). */
export interface Rejection {
  readonly peer: PeerId
  readonly channel: number
  readonly reason: "malformed" | "bad-signature" | "wrong-channel" | "reserved-message" | "unknown-origin"
  readonly detail: string
}

/** A message this node may not send: it does not encode, or it is internal to the network layer. */
export class InvalidOutbound extends Schema.TaggedError<InvalidOutbound>()("InvalidOutbound", {
  what: Schema.String,
  detail: Schema.String
}) {
  override get message() {
    return `cannot send ${this.what}: ${this.detail}`
  }
}

/**
 * A reliable message did not fit: the retransmission buffer of one peer (`scope: "peer"`), or the
 * node's (`"node"`), is full by count or by bytes. Nothing was queued for it (for `peer`: to that peer).
 */
export class ReliableBufferFull extends Schema.TaggedError<ReliableBufferFull>()("ReliableBufferFull", {
  scope: Schema.Literal("peer", "node"),
  peer: Schema.optional(Schema.String),
  limit: Schema.Literal("messages", "bytes"),
  max: Schema.Number
}) {
  override get message() {
    const whose = this.scope === "node" ? "this node's" : `peer ${this.peer?.slice(0, 8)}'s`
    return `${whose} reliable buffer is full: at most ${this.max} ${this.limit} unacknowledged`
  }
}

/** `awaitAcks` cannot be met: the message was cancelled, or fewer recipients can acknowledge it. */
export class AcksUnreachable extends Schema.TaggedError<AcksUnreachable>()("AcksUnreachable", {
  wanted: Schema.Number,
  acked: Schema.Number,
  reason: Schema.Literal("cancelled", "too-few-recipients")
}) {
  override get message() {
    return `cannot await ${this.wanted} acknowledgements (${this.acked} so far): ${
      this.reason === "cancelled" ? "the message was cancelled" : "fewer recipients than that took it"
    }`
  }
}

export type SendError = InvalidOutbound | ReliableBufferFull | PeerManager.PeerSendError

/**
 * A reliable message in flight: retransmitted to each recipient until that recipient acknowledges
 * it (it was handed to the recipient's consumer), or until `cancel`.
 */
export interface Reliable {
  /** The peers whose reliable buffers took it. */
  readonly recipients: ReadonlyArray<PeerId>
  /** The recipients that acknowledged it so far. */
  readonly acked: Effect.Effect<ReadonlyArray<PeerId>>
  /**
   * Waits until `quorum` of the recipients (of `among`, when given) acknowledged it; returns them.
   * Fails with `AcksUnreachable` once it is cancelled, or at once when fewer could.
   */
  readonly awaitAcks: (
    quorum: number,
    among?: ReadonlyArray<PeerId>
  ) => Effect.Effect<ReadonlyArray<PeerId>, AcksUnreachable>
  /** Stops its retransmission to every recipient that has not acknowledged it (idempotent). */
  readonly cancel: Effect.Effect<void>
}

/** Reliability of one message: by the config's `reliableMessages` unless said here. */
export interface ReliableOptions {
  /**
   * Retransmit until acknowledged, delivered in this node's order, once (see the README's delivery
   * guarantees). Default: true for the message types in the config's `reliableMessages`.
   */
  readonly reliable?: boolean
  /** A reliable message is cancelled when this scope closes (for example the scope of a view). */
  readonly scope?: Scope.Scope
}

/** What became of a broadcast or multicast, peer by peer (its first hop). */
export interface BroadcastReceipt {
  /** `direct`: `queued` and `failed` name every recipient. `tree`: the root's children only. */
  readonly strategy: "direct" | "tree"
  readonly sequence: bigint
  readonly id: Envelope.EnvelopeId
  /** Peers whose queues took the envelope. */
  readonly queued: ReadonlyArray<PeerId>
  /**
   * Peers that did not take it, and why (not connected, backpressure; for a reliable broadcast, a
   * full reliable buffer: a reliable broadcast keeps what it cannot send yet and retransmits it).
   */
  readonly failed: ReadonlyArray<{
    readonly peer: PeerId
    readonly error: PeerManager.PeerSendError | ReliableBufferFull
  }>
  /** For a reliable broadcast: its acknowledgements and its cancellation. */
  readonly reliable?: Reliable
}

export interface BroadcastOptions extends ReliableOptions {
  /**
   * This broadcast's strategy, instead of the config's (`direct`, `tree` or `adaptive`). A reliable
   * broadcast always goes direct: its origin retransmits to each recipient itself.
   */
  readonly strategy?: Strategy
}

export interface SendOptions extends ReliableOptions {
  /** Wait up to this long for a connection instead of failing at once with `PeerNotConnected`. */
  readonly waitForConnection?: Duration.DurationInput
  /**
   * When the peer is not connected, let validators connected to both carry the message, sealed in an
   * envelope addressed to the peer (they can neither alter nor forge it). Fails with
   * `PeerNotConnected` only when no validator could take it. Default false.
   */
  readonly route?: boolean
}

/** Counts what crosses this service, synchronously (for metrics); every hook is optional. */
export interface Observer {
  readonly sent?: (peer: PeerId, channel: number, tag: Message.MessageTag, bytes: number) => void
  readonly delivered?: (delivery: Delivery) => void
  readonly rejected?: (rejection: Rejection) => void
  readonly duplicate?: (peer: PeerId, channel: number) => void
  /** The strategy a broadcast took (adaptive chooses per broadcast). */
  readonly chose?: (strategy: "direct" | "tree") => void
  /** This node relayed a tree envelope (or a routed one) to `peer`. */
  readonly relayed?: (peer: PeerId, channel: number, bytes: number) => void
  /** The origin sent `count` copies itself to validators whose tree receipt had not come. */
  readonly repaired?: (count: number) => void
  /** The origin blamed `peer` for a subtree that did not receive a tree broadcast. */
  readonly relayFailed?: (peer: PeerId) => void
  /** A routed envelope for another peer: forwarded, or dropped (no connection, over its rate). */
  readonly routed?: (outcome: "sent" | "forwarded" | "no-route" | "over-limit") => void
  /** Reliable messages sent again to `peer` (not acknowledged in time, or after a reconnect). */
  readonly retransmitted?: (peer: PeerId, count: number) => void
  /** `peer` acknowledged `count` reliable messages; `latency`: millis since the first send of the oldest. */
  readonly acked?: (peer: PeerId, count: number, latency: number) => void
  /** An acknowledgement from `peer` was refused (`future`, `malformed`, `unknown-stream`) or stale. */
  readonly ackRefused?: (peer: PeerId, reason: "future" | "malformed" | "unknown-stream" | "stale") => void
  /**
   * Reliable messages from `origin` given up: a gap that did not close within `gapTimeout`, a sender
   * restart, or messages the origin cancelled (`cancelled`).
   */
  readonly gapSkipped?: (origin: PeerId, count: number, why: "timeout" | "cancelled" | "restart") => void
  /** A reliable message from `peer` was dropped: a duplicate, an older incarnation, beyond the window. */
  readonly reliableDropped?: (peer: PeerId, why: "duplicate" | "stale" | "beyond-window") => void
}

export interface BroadcasterOptions {
  readonly identity: Identity.Identity
  readonly networkId: string
  /** Every validator, this node included or not: `broadcast` sends to all of them but this node. */
  readonly validators: ReadonlyArray<PeerId>
  /** The epoch of `validators` (default 0): tree headers name it. */
  readonly epoch?: bigint
  /** Accept broadcasts whose origin is not a validator (default false: refused and reported). */
  readonly admitNonValidators?: boolean
  readonly config?: BroadcastConfigInput
  readonly observer?: Observer
  /**
   * Spans for send, broadcast and receive, and the sender's trace context in every message, so a
   * receive span is a child of the send or broadcast span on the other node. Default false: no
   * span and no trace bytes on the hot path.
   */
  readonly tracing?: boolean
  /** The tracer of receive spans; default: the consumer's (the fiber that runs `inbound`). */
  readonly tracer?: Tracer.Tracer
  /**
   * This node's reliable-stream incarnation: receivers take a higher one for a restarted sender.
   * Default: the clock's millis at start (the node persists one above the last under its data
   * directory).
   */
  readonly incarnation?: bigint
}

/**
 * Point-to-point send. With `reliable: true` it returns the message's `Reliable` handle; a message
 * reliable by the config's default is retransmitted too, without a handle.
 */
export interface SendFunction {
  (
    peer: PeerId,
    message: Message.Message,
    options: SendOptions & { readonly reliable: true }
  ): Effect.Effect<Reliable, SendError>
  (peer: PeerId, message: Message.Message, options?: SendOptions): Effect.Effect<void, SendError>
}

/** What the reliable buffers hold now: distinct messages and their bytes (each counted once). */
export interface ReliableBuffer {
  readonly messages: number
  readonly bytes: number
  /** Entries over every peer's buffer (a broadcast to n peers counts n). */
  readonly entries: number
}

export interface BroadcasterShape {
  readonly self: PeerId
  /**
   * Seals `message` once and queues it to every other validator. Never waits for a peer: one that is
   * not connected, or whose queue is full, is listed in the receipt's `failed`. Fails only when the
   * message itself cannot be sent (`InvalidOutbound`).
   */
  readonly broadcast: (
    message: Message.Message,
    options?: BroadcastOptions
  ) => Effect.Effect<BroadcastReceipt, InvalidOutbound | ReliableBufferFull>
  /** `broadcast` to the given peers only (this node is skipped). */
  readonly multicast: (
    peers: ReadonlyArray<PeerId>,
    message: Message.Message,
    options?: ReliableOptions
  ) => Effect.Effect<BroadcastReceipt, InvalidOutbound | ReliableBufferFull>
  /**
   * Queues `message` to one peer on the channel of its type. To this node itself: delivered on
   * `inbound` (loopback). To a peer that is not connected: `PeerNotConnected` at once, unless asked
   * to wait. A full queue: `Backpressure` (or a counted drop, by the channel's policy).
   */
  readonly send: SendFunction
  /**
   * Every message for this node, verified and deduplicated, in order per peer and channel. One
   * consumer (a second concurrent one is a defect): when it falls behind, peers' sockets pause
   * (backpressure), and nothing is dropped. Chunks are handed out whole: a consumer that stops in
   * the middle of one (`Stream.take`) drops the rest of it. Ends when the layer closes.
   */
  readonly inbound: Stream.Stream<Delivery>
  /**
   * The next chunk of `inbound` without a stream around it (waits for one): for a consumer loop, the
   * cheapest way to take messages. The same queue and the same one consumer's place as `inbound`
   * (taking while a stream runs, or from two fibers at once, is a defect). Once the broadcaster
   * closed, the caller is interrupted, as by `Queue.take`.
   */
  readonly receive: Effect.Effect<Chunk.Chunk<Delivery>>
  /**
   * A validator-set change (epochs): `broadcast` goes to `recipients` (the newest set, of `epoch`)
   * from now on, and envelopes are accepted from origins in `origins` (every tracked set: messages of
   * a set being left still arrive). This node is skipped in both. Trees are drawn over the newest
   * set; the last 4 sets are kept to relay trees of envelopes sealed before the change.
   */
  readonly setValidators: (
    recipients: ReadonlyArray<PeerId>,
    origins: ReadonlyArray<PeerId>,
    epoch?: bigint
  ) => Effect.Effect<void>
  /** What the reliable buffers hold now. */
  readonly reliableBuffer: Effect.Effect<ReliableBuffer>
}

export class Broadcaster extends Context.Tag("@hotstuff2/broadcast/Broadcaster")<
  Broadcaster,
  BroadcasterShape
>() {
  /** A broadcaster over the `PeerManager` and `PeerRegistry` in context (bad input is reported there). */
  static readonly layer = (
    options: BroadcasterOptions
  ): Layer.Layer<Broadcaster, InvalidBroadcastConfig, PeerManager.PeerManager | PeerRegistry.PeerRegistry> =>
    Layer.scoped(Broadcaster, internal.make(options))
}

/**
 * The channel each message type travels on: consensus (1) for proposals, votes and quorum
 * certificates; control (2) for view changes, timeouts and application messages; sync (4) for block
 * sync. Heartbeats (0) and discovery (3) are internal: sending them is an `InvalidOutbound`.
 */
export const channelOf = internal.channelOf

/**
 * Whether a message slot (one byte string of a received frame) is a point-to-point `RpcRequest` or
 * `RpcResponse` sent with `send` (WIRE.md 7.6, kinds `0x00` and `0x01`), from its first bytes only:
 * the predicate a node gives `PeerManager`'s `divert` to take request/response traffic off the sync
 * channel before `inbound`.
 */
export const isRpcSlot: (slot: Uint8Array) => boolean = Payload.isRpcSlot

/**
 * Reads a point-to-point slot (kind `0x00` or `0x01`): its message and the sender's trace context;
 * a string says why it is refused (another kind, a cut-short trace context, a message that does not
 * decode). For a consumer of diverted slots, which the broadcaster's own checks never see.
 */
export const readDirectSlot = (
  slot: Uint8Array
): { readonly message: Message.Message; readonly trace: Envelope.TraceContext | undefined } | string => {
  const parsed = Payload.parse(slot)
  if (typeof parsed === "string") return parsed
  if (parsed.kind !== Payload.DIRECT && parsed.kind !== Payload.DIRECT_TRACED) {
    return `slot kind 0x${parsed.kind.toString(16).padStart(2, "0")} is not a point-to-point message`
  }
  const decoded = Codec.decode(parsed.body)
  return Either.isLeft(decoded) ? decoded.left.message : { message: decoded.right, trace: parsed.trace }
}
