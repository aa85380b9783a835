/**
 * The network layer of a HotStuff-2 validator as one Effect layer: authenticated, encrypted
 * connections to every validator, kept up through crashes and flaky links; point-to-point sends,
 * signed broadcasts and multicasts, delivered once; peer events and status; spans and metrics.
 */
import type { Broadcaster } from "@hotstuff2/broadcast"
import type { PeerRegistry } from "@hotstuff2/peers"
import type { SimulatedNetwork } from "@hotstuff2/transport"
import type { Identity, Message } from "@hotstuff2/wire"
import type * as Chunk from "effect/Chunk"
import * as Context from "effect/Context"
import type * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import type * as Option from "effect/Option"
import * as Schema from "effect/Schema"
import type * as Stream from "effect/Stream"
import * as internal from "./internal/network.js"
import type { InvalidNodeConfig, NodeConfig, NodeConfigInput } from "./NodeConfig.js"

export type PeerId = Identity.PeerId

/**
 * A message for this node, delivered once: `from` is the peer whose connection carried it, `origin`
 * who created it (the envelope's signer for a broadcast; `from` for `send`).
 */
export type Inbound = Broadcaster.Delivery

/** Connected, disconnected, discovered, score changed, banned, unbanned. */
/**
 * A peer event: the registry's (connected, disconnected, discovered with its source, score changed,
 * banned, unbanned, refused), and the validator set's: a peer joined the tracked sets with an epoch,
 * or left every tracked set (its connection is closed after `leaveGrace`).
 */
export type PeerEvent =
  | PeerRegistry.PeerEvent
  | { readonly _tag: "ValidatorJoined"; readonly peer: PeerId; readonly epoch: bigint }
  | { readonly _tag: "ValidatorLeft"; readonly peer: PeerId; readonly epoch: bigint }

/** A validator of a new set, as `updateValidators` takes it: its key, and where it listens if known. */
export interface ValidatorEntry {
  readonly id: PeerId
  readonly addresses?: ReadonlyArray<string>
}

/** `updateValidators` refused a set: an epoch not newer than the newest, or an invalid entry. */
export class InvalidValidatorSet extends Schema.TaggedError<InvalidValidatorSet>()("InvalidValidatorSet", {
  epoch: Schema.BigIntFromSelf,
  detail: Schema.String
}) {
  override get message() {
    return `validator set of epoch ${this.epoch} refused: ${this.detail}`
  }
}

/** What this node knows of a peer now. */
export interface PeerStatus {
  readonly id: PeerId
  readonly validator: boolean
  readonly addresses: ReadonlyArray<string>
  /** Each address with where it came from (config, bootstrap, dns, anchor, gossip, inbound). */
  readonly sources: ReadonlyArray<{ readonly address: string; readonly source: PeerRegistry.AddressSource }>
  /** The tracked validator-set epochs this peer is a member of (none: not a validator). */
  readonly epochs: ReadonlyArray<bigint>
  readonly state: PeerRegistry.ConnectionState
  /** Reputation, 0 neutral; at the ban threshold the peer is banned. */
  readonly score: number
  /** Smoothed heartbeat round-trip time, milliseconds. */
  readonly rtt: number | undefined
  readonly ban: Option.Option<PeerRegistry.Ban>
  /** Clock millis of the last frame or connection from this peer. */
  readonly lastSeen: number | undefined
  /** Failed dials since the last connection. */
  readonly dialFailures: number
}

/** The node could not start: its identity, listen address, telemetry or health endpoint failed. */
export class StartFailed extends Schema.TaggedError<StartFailed>()("StartFailed", {
  what: Schema.Literal("identity", "listen", "prometheus", "health", "telemetry"),
  detail: Schema.String
}) {
  override get message() {
    return `cannot start the node's ${this.what}: ${this.detail}`
  }
}

export type NetworkError = InvalidNodeConfig | StartFailed

export type SendError = Broadcaster.SendError
export type SendOptions = Broadcaster.SendOptions
export type BroadcastOptions = Broadcaster.BroadcastOptions
export type BroadcastReceipt = Broadcaster.BroadcastReceipt
export type Reliable = Broadcaster.Reliable
export type ReliableOptions = Broadcaster.ReliableOptions

export interface NodeNetworkShape {
  /** This node's PeerId. */
  readonly self: PeerId
  /** The bound listen address (the real port when the config asked for port 0). */
  readonly address: string
  /** The Prometheus endpoint, when the config asked for one. */
  readonly metricsAddress: string | undefined
  /** The probe endpoint (`/healthz`, `/readyz`), when the config asked for one: its bound address. */
  readonly healthAddress: string | undefined
  /**
   * Runs `effect` under this node's tracer when the node exports spans itself (`telemetry.otlpEndpoint`):
   * the application's spans then go to the same collector under the node's service name, and join
   * the traces that messages carry. As it is otherwise (the application's own tracer).
   */
  readonly traced: <A, E, R>(effect: Effect.Effect<A, E, R>) => Effect.Effect<A, E, R>
  /**
   * Signs `message` once and sends it to every other validator by the config's strategy (or
   * `options.strategy`): `direct` queues it to each through its own queues; `tree` to a few, which
   * relay it, with receipts and repair by the origin; `adaptive` picks per broadcast (broadcast
   * README). Never waits for a peer: one that is not connected, or is backed up, is listed in the
   * receipt's `failed` (for a tree: among the first hop). Fails only when the message cannot be sent
   * at all (`InvalidOutbound`), or, reliable, when this node's reliable buffer is full.
   * Reliable (`reliable: true`, or a type in `broadcast.reliableMessages`): sent direct, retransmitted
   * to each validator until it acknowledges, delivered in this node's order, once; the receipt's
   * `reliable` waits for acknowledgements (`awaitAcks`) and cancels (README, "Delivery guarantees").
   */
  readonly broadcast: (
    message: Message.Message,
    options?: BroadcastOptions
  ) => Effect.Effect<BroadcastReceipt, Broadcaster.InvalidOutbound | Broadcaster.ReliableBufferFull>
  /**
   * Queues `message` to one peer. To a peer that is not connected: `PeerNotConnected` at once, or
   * after `waitForConnection`; with `route: true`, validators connected to both carry it instead,
   * sealed for the peer (they can neither alter nor forge it). Under backpressure: `Backpressure` at once (or a counted drop, by
   * the channel's policy). To this node itself: delivered on `messages`.
   * Reliable: held (even for a peer not connected) and retransmitted until acknowledged; with
   * `reliable: true` it returns the message's `Reliable` handle; a full buffer: `ReliableBufferFull`.
   */
  readonly send: Broadcaster.SendFunction
  /** `broadcast` to some peers only. */
  readonly multicast: (
    peers: ReadonlyArray<PeerId>,
    message: Message.Message,
    options?: ReliableOptions
  ) => Effect.Effect<BroadcastReceipt, Broadcaster.InvalidOutbound | Broadcaster.ReliableBufferFull>
  /**
   * Waits until `quorum` recipients (of `among`, when given) acknowledged a reliable broadcast or
   * send: how a leader knows a certificate reached n - f. Fails with `AcksUnreachable` when it was
   * cancelled or fewer recipients took it, and with `InvalidOutbound` for an unreliable receipt.
   */
  readonly awaitAcks: (
    sent: BroadcastReceipt | Reliable,
    quorum: number,
    among?: ReadonlyArray<PeerId>
  ) => Effect.Effect<ReadonlyArray<PeerId>, Broadcaster.AcksUnreachable | Broadcaster.InvalidOutbound>
  /**
   * Every message for this node: verified, deduplicated, in order per peer and channel. One
   * consumer (the consensus loop; a second concurrent one is a defect): when it falls behind, peers'
   * sockets pause and nothing is dropped. Messages come in chunks: a consumer that stops in the
   * middle of one (`Stream.take`) drops the rest of it. Ends when the layer closes.
   */
  readonly messages: Stream.Stream<Inbound>
  /**
   * The next chunk of `messages` without a stream around it (waits for one): for a consensus loop,
   * the cheapest way to take messages (a chunk already there is handed over in the caller's step; a
   * wait is one resume). The same queue and the same one consumer's place as `messages`: taking
   * while a `messages` stream runs, or from two fibers at once, is a defect. Once the layer closed,
   * the caller is interrupted, as by `Queue.take`.
   */
  readonly receive: Effect.Effect<Chunk.Chunk<Inbound>>
  /** Peer events from the moment of subscription. */
  readonly peerEvents: Stream.Stream<PeerEvent>
  /** Every known peer's status: the validators first, in the config's order. */
  readonly peers: Effect.Effect<ReadonlyArray<PeerStatus>>
  /**
   * A new validator set for `epoch` (higher than every epoch before; the config's set is epoch 0).
   * The node tracks the last `trackedEpochs` sets: it admits and dials their union, broadcasts to
   * the newest, and drops a peer that left every tracked set after `leaveGrace`. `peerEvents` tells
   * of joins and leaves; `peers` shows each peer's epochs.
   */
  readonly updateValidators: (
    epoch: bigint,
    validators: ReadonlyArray<ValidatorEntry>
  ) => Effect.Effect<void, InvalidValidatorSet>
  /** The newest epoch and its validators. */
  readonly validatorSet: Effect.Effect<{ readonly epoch: bigint; readonly validators: ReadonlyArray<PeerId> }>
  /**
   * Connection budget (`peers.maxConnections` smaller than the validator set): the peers wanted
   * under `tag` (for example "leaders": the next few leaders, to which votes go) are dialled and
   * kept; `[]` releases the tag. With the set within the budget (the default for small sets) every
   * validator is kept connected anyway. The broadcaster keeps its own tree children under "tree".
   */
  readonly want: (tag: string, peers: ReadonlyArray<PeerId>) => Effect.Effect<void>
}

export class NodeNetwork extends Context.Tag("@hotstuff2/node/NodeNetwork")<NodeNetwork, NodeNetworkShape>() {
  /**
   * The network of one validator over TLS (or plain TCP when configured so). Scoped: closing it
   * stops accepting and dialling, flushes queued messages within `shutdownTimeout`, closes every
   * connection and releases every socket, fiber and timer, then flushes telemetry.
   */
  static readonly layer = (config: NodeConfigInput | NodeConfig): Layer.Layer<NodeNetwork, NetworkError> =>
    Layer.scoped(NodeNetwork, internal.make(config, internal.realTransport))

  /**
   * The same node on the `SimulatedNetwork` in context, driven by Effect's Clock: a whole cluster of
   * them runs deterministically under `TestClock` (see `TestCluster`). The listen address's host is
   * the node's host on the simulated network.
   */
  static readonly layerTest = (
    config: NodeConfigInput | NodeConfig
  ): Layer.Layer<NodeNetwork, NetworkError, SimulatedNetwork.SimulatedNetwork> =>
    Layer.scoped(NodeNetwork, internal.make(config, internal.simulatedTransport))
}

/**
 * The types of the contract under the service's name, so that `import { NodeNetwork }` is all an
 * application needs: `NodeNetwork.layer(config)`, `yield* NodeNetwork`, `NodeNetwork.Inbound`.
 */
export declare namespace NodeNetwork {
  export type Shape = NodeNetworkShape
  export type Inbound = import("./NodeNetwork.js").Inbound
  export type PeerEvent = import("./NodeNetwork.js").PeerEvent
  export type PeerStatus = import("./NodeNetwork.js").PeerStatus
  export type ValidatorEntry = import("./NodeNetwork.js").ValidatorEntry
  export type PeerId = import("./NodeNetwork.js").PeerId
  export type SendError = import("./NodeNetwork.js").SendError
  export type SendOptions = import("./NodeNetwork.js").SendOptions
  export type BroadcastReceipt = import("./NodeNetwork.js").BroadcastReceipt
  export type Reliable = import("./NodeNetwork.js").Reliable
  export type NetworkError = import("./NodeNetwork.js").NetworkError
}
