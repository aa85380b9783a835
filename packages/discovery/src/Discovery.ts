/**
 * Where peers are. Feeds addresses into the `PeerRegistry`, each with its source, from the config
 * (static), DNS (SRV names and host names), bootstrap nodes and gossip of signed peer records, and
 * never decides identity: who a peer is comes only from the key its connection proves. Needs a
 * `PeerManager` built with the discovery channel among its `separateChannels`.
 */
import type { PeerManager, PeerRegistry } from "@hotstuff2/peers"
import type { Identity, Message } from "@hotstuff2/wire"
import * as Context from "effect/Context"
import type * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import type * as Option from "effect/Option"
import type { DiscoveryConfigInput, InvalidDiscoveryConfig } from "./DiscoveryConfig.js"
import type { RecordRefusal } from "./DiscoveryError.js"
import * as internal from "./internal/discovery.js"

export interface DiscoveryOptions {
  readonly identity: Identity.Identity
  readonly networkId: string
  /** The validator set at start (the config's); later sets come through `setValidators`. */
  readonly validators: ReadonlyArray<PeerManager.Validator>
  /** The epoch of that set (default 0). */
  readonly epoch?: bigint
  readonly config?: DiscoveryConfigInput
  /** Where anchors survive a restart (the node's data directory); none: not kept. */
  readonly dataDirectory?: string
  /** This node admits non-validators: it keeps (and shares) their records too, within the subnet caps. */
  readonly admitNonValidators?: boolean
}

export interface DiscoveryStats {
  /** Validators in the tracked sets, and how many of them have an address this node could dial. */
  readonly validators: number
  readonly validatorsWithAddress: number
  /** Records held (validators' and kept non-validators'). */
  readonly records: number
  readonly recordsAccepted: number
  readonly recordsRefused: Readonly<Partial<Record<RecordRefusal, number>>>
  readonly requestsSent: number
  readonly requestsAnswered: number
  /** Exchange requests past `requestsPerInterval` (a flood), not answered. */
  readonly requestsRefused: number
  /** Pushed records past `requestsPerInterval` in an interval, not read. */
  readonly pushesRefused: number
  readonly responsesReceived: number
  /** Messages on the discovery channel that break its rules (charged to the sender). */
  readonly violations: number
  readonly bootstrapDials: number
  readonly bootstrapFailures: number
  /** DNS: queries made, failed (the last good answer kept), records not read past `maxRecords`, addresses refused. */
  readonly dnsQueries: number
  readonly dnsFailures: number
  readonly dnsTruncated: number
  readonly dnsRefused: Readonly<Record<string, number>>
  /** Dials of SRV targets no configured address names (to learn whose they are), and how many failed. */
  readonly dnsProbes: number
  readonly dnsProbesFailed: number
}

export interface DiscoveryShape {
  /** This node's signed record, once it has an address to advertise. */
  readonly ownRecord: Effect.Effect<Option.Option<Message.PeerRecord>>
  /** The newest verified record of every peer held. */
  readonly records: Effect.Effect<ReadonlyArray<Message.PeerRecord>>
  /**
   * The tracked validator sets changed (their union, and the newest epoch): records are classified
   * again, and this node's record is signed again with the epoch. The DNS source keeps the host names
   * it started with (a newcomer's configured host name is dialled through the system resolver). The
   * `PeerManager`'s own set is the caller's to change.
   */
  readonly setValidators: (
    epoch: bigint,
    validators: ReadonlyArray<PeerManager.Validator>
  ) => Effect.Effect<void>
  readonly stats: Effect.Effect<DiscoveryStats>
}

export class Discovery extends Context.Tag("@hotstuff2/discovery/Discovery")<Discovery, DiscoveryShape>() {
  /** Discovery over the `PeerManager` and `PeerRegistry` in context; closing it stops every source. */
  static readonly layer = (
    options: DiscoveryOptions
  ): Layer.Layer<Discovery, InvalidDiscoveryConfig, PeerManager.PeerManager | PeerRegistry.PeerRegistry> =>
    Layer.scoped(Discovery, internal.make(options))
}
