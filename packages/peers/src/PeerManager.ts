/**
 * Keeps this node connected to every validator through crashes, restarts and flaky links, notices
 * within seconds when a peer is dead, and isolates one that misbehaves: one connection per peer,
 * redial on a jittered exponential schedule, heartbeats with RTT, inbound rate limits, and bans.
 * Past `maxConnections` validators, a connection budget: only wanted peers and peers sent to are
 * dialled, and idle connections are trimmed.
 */
import type { Transport as T, TransportError } from "@hotstuff2/transport"
import type { Frame, Identity, Message } from "@hotstuff2/wire"
import * as Context from "effect/Context"
import type * as Duration from "effect/Duration"
import type * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import type * as Option from "effect/Option"
import * as Schema from "effect/Schema"
import type * as Stream from "effect/Stream"
import * as internal from "./internal/manager.js"
import type { PeerEvent, PeerRegistry } from "./PeerRegistry.js"
import type { InvalidPeersConfig, PeersConfigInput } from "./PeersConfig.js"

export type PeerId = Identity.PeerId

/** A validator: its key and where it can be reached. */
export interface Validator {
  readonly id: PeerId
  readonly addresses: ReadonlyArray<string>
}

export interface PeerManagerOptions {
  readonly identity: Identity.Identity
  /** Where to listen, `host:port` (port 0 allowed: see `PeerManager.address`). */
  readonly listen: string
  /** The peers to stay connected to (this node may be among them; it is skipped). */
  readonly validators: ReadonlyArray<Validator>
  readonly config?: PeersConfigInput
  /**
   * Channels whose frames go to their own consumer (`inboundOn`) instead of `inbound`: discovery
   * takes its channel this way. Each holds `inboundFramesPerPeer` frames per peer; past that, frames
   * of that channel are dropped and counted (these are drop channels: a slow consumer must not pause
   * the peer's socket, and with it its votes).
   */
  readonly separateChannels?: ReadonlyArray<number>
  /**
   * Messages of one channel that go to their own consumer (`inboundDiverted`) instead of `inbound`,
   * picked one by one by `select` in the connection's reader (the node takes request/response frames
   * off the sync channel so, and they reach `NodeRpc` whatever the consumer of `inbound` is doing);
   * the rest of each frame goes on to `inbound` as before, in order. Rate limits apply first, as to
   * any frame. Other channels pay one comparison per frame. Drop policy of `separateChannels`:
   * `inboundFramesPerPeer` frames per peer wait, more are dropped and counted (`separateDropped`).
   */
  readonly divert?: { readonly channel: number; readonly select: (message: Uint8Array) => boolean }
  /**
   * Reliable delivery's acknowledgements: called with each `Ack` a connected peer sends on the
   * heartbeat channel (0), synchronously in that connection's reader, in order, with no fiber step
   * (as pongs are taken). It must not block; a throw is logged and that Ack dropped. Without it an
   * `Ack` is ignored, not reported: a peer may run reliable delivery while this node does not.
   * Acks are sent with `send`/`unsafeSend` on channel 0 (encoded with `Codec.encode`); that
   * channel's queue drops the oldest when full, which acks, being cumulative, can afford.
   */
  readonly onAck?: (peer: PeerId, ack: Message.Ack) => void
}

/** Frames received from a peer, in order per channel. */
export interface InboundFrame {
  readonly peer: PeerId
  readonly channel: number
  readonly messages: ReadonlyArray<Uint8Array>
}

/** A send to a peer that is not connected (and the caller did not ask to wait, or waited in vain). */
export class PeerNotConnected extends Schema.TaggedError<PeerNotConnected>()("PeerNotConnected", {
  peer: Schema.String,
  detail: Schema.String
}) {
  override get message() {
    return `peer ${this.peer.slice(0, 8)} is not connected: ${this.detail}`
  }
}

export type PeerSendError = PeerNotConnected | T.SendError

export interface SendOptions {
  /** Wait up to this long for a connection instead of failing at once with `PeerNotConnected`. */
  readonly waitForConnection?: Duration.DurationInput
}

export interface PeerManagerShape {
  readonly localPeer: PeerId
  /** The bound listen address. */
  readonly address: string
  /**
   * Queues a frame to `peer` on `channel`. To a peer that is not connected: fails at once with
   * `PeerNotConnected`, or waits for the connection when asked to. In budget mode a validator that
   * is not connected is dialled on demand either way (so a later send may find it connected). A full
   * channel queue fails with `Backpressure` (or drops, by the channel's policy), never waits: a slow
   * peer never blocks.
   */
  readonly send: (
    peer: PeerId,
    channel: number,
    messages: ReadonlyArray<Frame.Outbound>,
    options?: SendOptions
  ) => Effect.Effect<void, PeerSendError>
  /**
   * `send` without an Effect and without waiting, for hot paths: queues the frame and returns
   * undefined, or returns what `send` would fail with (`PeerNotConnected` at once to a peer that is
   * not connected; in budget mode a validator's on-demand dial starts in the background).
   */
  readonly unsafeSend: (
    peer: PeerId,
    channel: number,
    messages: ReadonlyArray<Frame.Outbound>
  ) => PeerSendError | undefined
  /**
   * Frames from every peer, after rate limiting (heartbeats are handled here and not included).
   * One consumer. When it falls behind, readers stop taking frames and each peer's socket pauses.
   */
  readonly inbound: Stream.Stream<InboundFrame>
  /**
   * `inbound` without a Stream, for a consumer that runs its own loop (the Broadcaster): takes up to
   * `max` frames now, none when nothing waits. The same one consumer as `inbound`.
   */
  readonly unsafePoll: (max: number) => ReadonlyArray<InboundFrame>
  /** Calls `listener` once, when the next frame arrives (a later call replaces it). */
  readonly unsafeOnInbound: (listener: () => void) => void
  /**
   * Replaces the options' `onAck`: reliable delivery's acknowledgements from peers, handed over
   * synchronously as they arrive on the heartbeat channel (undefined: ignored).
   */
  readonly unsafeOnAck: (handler: ((peer: PeerId, ack: Message.Ack) => void) | undefined) => void
  /** Peers connected now. */
  readonly connected: Effect.Effect<ReadonlyArray<PeerId>>
  /** The connection to a peer, if any. */
  readonly connection: (peer: PeerId) => Effect.Effect<Option.Option<T.Connection>>
  /** Connected, disconnected, discovered, score changed, banned, unbanned, refused. */
  readonly events: Stream.Stream<PeerEvent>
  /** Inbound connection attempts this node's listener refused so far, by reason. */
  readonly refused: Effect.Effect<T.RefusalCounts>
  /**
   * Frames of one of the `separateChannels`, rate limited as any other (one consumer per channel).
   * A channel that is not separate gives an empty stream: its frames go to `inbound`.
   */
  readonly inboundOn: (channel: number) => Stream.Stream<InboundFrame>
  /**
   * The messages picked by the options' `divert` (as frames of its channel), after rate limiting. One
   * consumer; empty without `divert`.
   */
  readonly inboundDiverted: Stream.Stream<InboundFrame>
  /**
   * Frames of the separate channels (and of `divert`, under its channel) dropped because their
   * consumer fell behind, by channel.
   */
  readonly separateDropped: Effect.Effect<ReadonlyMap<number, number>>
  /**
   * Replaces the validator set (an epoch change): newcomers get a dialer (their `addresses` enter the
   * registry as `config`), peers that left lose theirs, and the connection of one that left is closed
   * as `not-a-validator` unless non-validators are admitted or it was `connectTo`'d. Idempotent.
   */
  readonly setValidators: (validators: ReadonlyArray<Validator>) => Effect.Effect<void>
  /** The current validator set (this node left out). */
  readonly validators: Effect.Effect<ReadonlySet<PeerId>>
  /**
   * Dials `address` once, for a peer this node wants whatever the validator set says (a bootstrap
   * node, a DNS target whose key is not yet known): `expected` is its key, or a predicate over the
   * key it proves. The connection is admitted and kept like a validator's (heartbeats, rate limits)
   * but never redialled, until `disconnect`. Returns the proven key.
   */
  readonly connectTo: (
    address: string,
    expected: T.Expected
  ) => Effect.Effect<PeerId, TransportError.DialError | PeerNotConnected>
  /** Closes this peer's connection with `reason` (a `connectTo` peer is no longer kept); a validator's is redialled. */
  readonly disconnect: (peer: PeerId, reason: string) => Effect.Effect<void>
  /**
   * Replaces the peers wanted under `tag` (the broadcaster's "tree" for this view's neighbours,
   * "leaders" for the next leaders); an empty list clears the tag. In budget mode (more validators
   * than `maxConnections`) a wanted validator is dialled and kept, and its connection never trimmed;
   * one no longer wanted under any tag is no longer dialled, and its connection may be trimmed once
   * idle for `idleBeforeTrim`. In full mesh every validator is dialled anyway: only remembered.
   */
  readonly want: (tag: string, peers: ReadonlyArray<PeerId>) => Effect.Effect<void>
  /** Connections closed as `over-budget` (idle, unwanted, past `maxConnections`) so far. */
  readonly trimmed: Effect.Effect<number>
}

export class PeerManager extends Context.Tag("@hotstuff2/peers/PeerManager")<
  PeerManager,
  PeerManagerShape
>() {
  /**
   * A manager over the `Transport` and `PeerRegistry` in context. Closing it stops accepting and
   * dialling; the transport's own release flushes and closes the connections.
   */
  static readonly layer = (
    options: PeerManagerOptions
  ): Layer.Layer<
    PeerManager,
    InvalidPeersConfig | import("@hotstuff2/transport").TransportError.ListenError,
    T.Transport | PeerRegistry
  > => Layer.scoped(PeerManager, internal.make(options))
}
