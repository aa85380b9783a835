/**
 * Every setting of discovery as a named, Schema-validated field with a default: which sources run
 * (bootstrap nodes, DNS, gossip), how often, and the limits that keep a flood of records or a hostile
 * DNS answer from costing more than a bounded amount.
 */
import { TransportConfig } from "@hotstuff2/transport"
import { Identity } from "@hotstuff2/wire"
import * as Duration from "effect/Duration"
import type * as Either from "effect/Either"
import * as Schema from "effect/Schema"

const { DurationSetting } = TransportConfig

const PositiveInt = Schema.Int.pipe(Schema.positive())

/** An entry point: where it listens, and its key when it is known (else any key it proves is taken). */
export const BootstrapNode = Schema.Struct({
  address: Schema.String,
  peer: Schema.optional(Identity.PeerId)
})
export interface BootstrapNode extends Schema.Schema.Type<typeof BootstrapNode> {}

/** DNS: SRV names whose targets are dial hints, and how to ask. */
export const DnsConfig = Schema.Struct({
  /** SRV names, e.g. `_p2p._tcp.validators.default.svc.cluster.local`. */
  srv: Schema.optionalWith(Schema.Array(Schema.String), { default: () => [] }),
  /** DNS servers by IP (`ip`, `ip:port`, `[ip]:port`: node:dns takes no names here); none: the system's. */
  servers: Schema.optional(Schema.Array(Schema.String)),
  /** One query's timeout (node:dns, per try). */
  timeout: Schema.optionalWith(DurationSetting, { default: () => Duration.seconds(2) }),
  tries: Schema.optionalWith(PositiveInt, { default: () => 2 }),
  /** Re-resolve no sooner than this after an answer, whatever its TTL says. */
  minInterval: Schema.optionalWith(DurationSetting, { default: () => Duration.seconds(5) }),
  /** Re-resolve no later than this, whatever the TTL says (node:dns gives no TTL for SRV answers). */
  maxInterval: Schema.optionalWith(DurationSetting, { default: () => Duration.seconds(60) }),
  /** Records taken from one answer; the rest are counted as truncated. */
  maxRecords: Schema.optionalWith(PositiveInt, { default: () => 256 })
})
export interface DnsConfig extends Schema.Schema.Type<typeof DnsConfig> {}

export const DiscoveryConfig = Schema.Struct({
  /**
   * Addresses put in this node's own signed record (`host:port`). Default: the bound listen address,
   * unless it is unspecified (0.0.0.0, ::), when the record has no address and peers learn this node
   * only from the connections it makes.
   */
  advertise: Schema.optional(Schema.Array(Schema.String)),
  /** Entry points asked for peer records at start; they need not be validators. */
  bootstrap: Schema.optionalWith(Schema.Array(BootstrapNode), { default: () => [] }),
  /** Bootstrap nodes that are not validators are left once this share of the validators has an address. */
  bootstrapLeaveAt: Schema.optionalWith(Schema.Number.pipe(Schema.between(0, 1)), { default: () => 1 }),
  dns: Schema.optional(DnsConfig),
  /** Gossip of signed peer records with connected peers. */
  gossip: Schema.optionalWith(Schema.Boolean, { default: () => true }),
  /** How often this node asks one connected peer for records (production: tens of seconds). */
  gossipInterval: Schema.optionalWith(DurationSetting, { default: () => Duration.seconds(30) }),
  /** Records in one reply, and asked for in one request. */
  maxRecordsPerReply: Schema.optionalWith(Schema.Int.pipe(Schema.between(1, 256)), { default: () => 64 }),
  /** Addresses kept from one record (the wire allows 16). */
  maxRecordAddresses: Schema.optionalWith(Schema.Int.pipe(Schema.between(1, 16)), { default: () => 4 }),
  /** A record's sequence (signing time in milliseconds) may be at most this far ahead of this node's clock. */
  maxFutureSkew: Schema.optionalWith(DurationSetting, { default: () => Duration.minutes(5) }),
  /** Exchange requests answered per peer per `gossipInterval`; more are refused and counted. */
  requestsPerInterval: Schema.optionalWith(PositiveInt, { default: () => 4 }),
  /** Records of non-validators kept (for admitted non-validators and bootstrap nodes). */
  maxNonValidatorRecords: Schema.optionalWith(PositiveInt, { default: () => 1024 }),
  /** Non-validator records per subnet (/16 IPv4, /32 IPv6): a flood from one operator stays small. */
  maxNonValidatorsPerSubnet: Schema.optionalWith(PositiveInt, { default: () => 8 }),
  /**
   * Accept DNS names in peer records. Off by default: a name is resolved by the dialer wherever its
   * DNS says (loopback included), so a signed record could point validators at their own services;
   * records then carry IP addresses (on Kubernetes, the pod IP). Names in the config, in bootstrap
   * entries and from DNS SRV answers are always taken.
   */
  recordHostNames: Schema.optionalWith(Schema.Boolean, { default: () => false }),
  /** Accept loopback addresses (one machine: a devnet, tests). Unspecified and multicast never are. */
  allowLoopback: Schema.optionalWith(Schema.Boolean, { default: () => false }),
  /** Validators whose last good address is kept as an anchor in the data directory, dialled first after a restart. */
  anchors: Schema.optionalWith(Schema.Int.pipe(Schema.between(0, 64)), { default: () => 4 })
})
export type DiscoveryConfig = typeof DiscoveryConfig.Type
export type DiscoveryConfigInput = typeof DiscoveryConfig.Encoded

/** A config field out of range. */
export class InvalidDiscoveryConfig extends Schema.TaggedError<InvalidDiscoveryConfig>()(
  "InvalidDiscoveryConfig",
  { field: Schema.String, detail: Schema.String }
) {
  override get message() {
    return `discovery config ${this.field}: ${this.detail}`
  }
}

/** Validates and fills in defaults; a bad field is named with the form it expects. */
export const decode: (input: DiscoveryConfigInput) => Either.Either<DiscoveryConfig, InvalidDiscoveryConfig> =
  TransportConfig.decodeWith(
    DiscoveryConfig,
    (field, detail) => new InvalidDiscoveryConfig({ field, detail })
  )
