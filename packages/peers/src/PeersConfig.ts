/**
 * Every limit and weight of the peers package as a named, Schema-validated field with a default:
 * reputation, bans, redial schedule, heartbeats, inbound rate limits, the connection budget,
 * persistence.
 */
import { TransportConfig } from "@hotstuff2/transport"
import * as Duration from "effect/Duration"
import type * as Either from "effect/Either"
import * as Schema from "effect/Schema"

const { DurationSetting } = TransportConfig

/** Named reputation events and what each costs (negative) or earns (positive). */
export const ReputationWeights = Schema.Struct({
  InvalidMessage: Schema.Number,
  BadSignature: Schema.Number,
  RateLimitExceeded: Schema.Number,
  Timeout: Schema.Number,
  ProtocolViolation: Schema.Number,
  UsefulMessage: Schema.Number
})
export interface ReputationWeights extends Schema.Schema.Type<typeof ReputationWeights> {}

export const defaultReputationWeights: ReputationWeights = {
  InvalidMessage: -20,
  BadSignature: -50,
  RateLimitExceeded: -10,
  Timeout: -5,
  ProtocolViolation: -30,
  UsefulMessage: 1
}

/** Inbound limits of one channel: token buckets refilled continuously, `burst` deep. */
export const ChannelRateLimit = Schema.Struct({
  channel: Schema.Int.pipe(Schema.between(0, 254)),
  messagesPerSecond: Schema.Number.pipe(Schema.positive()),
  bytesPerSecond: Schema.Number.pipe(Schema.positive()),
  /** Seconds of traffic a bucket holds: bursts up to `burstSeconds * rate` pass. */
  burstSeconds: Schema.Number.pipe(Schema.positive())
})
export interface ChannelRateLimit extends Schema.Schema.Type<typeof ChannelRateLimit> {}

const MiB = 1024 * 1024

/** Generous for validators (a leader sends a block per view), tight enough to stop a flood. */
export const defaultRateLimits: ReadonlyArray<ChannelRateLimit> = [
  { channel: 0, messagesPerSecond: 250, bytesPerSecond: 64 * 1024, burstSeconds: 2 },
  { channel: 1, messagesPerSecond: 20_000, bytesPerSecond: 256 * MiB, burstSeconds: 2 },
  { channel: 2, messagesPerSecond: 5_000, bytesPerSecond: 64 * MiB, burstSeconds: 2 },
  { channel: 3, messagesPerSecond: 200, bytesPerSecond: 4 * MiB, burstSeconds: 5 },
  // A sync bucket holds more than a full frame (4096 messages): a large SyncResponse always fits.
  { channel: 4, messagesPerSecond: 10_000, bytesPerSecond: 256 * MiB, burstSeconds: 2 }
]

/** `maxConnections` when none is given: small and medium validator sets keep the full mesh. */
export const defaultMaxConnections = 1024

/** `trimTo` when none is given: this share of `maxConnections` (rounded down). */
export const defaultTrimShare = 0.9

const fields = {
  // ---- reputation and bans ----
  weights: Schema.optionalWith(ReputationWeights, { default: () => defaultReputationWeights }),
  /** Scores decay toward 0 (neutral), halving every `scoreHalfLife`. */
  scoreHalfLife: Schema.optionalWith(DurationSetting, { default: () => Duration.minutes(10) }),
  /** Scores are clamped to [-maxScore, maxScore]. */
  maxScore: Schema.optionalWith(Schema.Number.pipe(Schema.positive()), { default: () => 100 }),
  /** A score at or under this bans the peer. */
  banThreshold: Schema.optionalWith(Schema.Number.pipe(Schema.negative()), { default: () => -100 }),
  /** The first ban lasts `banBase`, each next one `banFactor` times longer, at most `banCap`. */
  banBase: Schema.optionalWith(DurationSetting, { default: () => Duration.minutes(1) }),
  banFactor: Schema.optionalWith(Schema.Number.pipe(Schema.greaterThanOrEqualTo(1)), { default: () => 4 }),
  banCap: Schema.optionalWith(DurationSetting, { default: () => Duration.hours(24) }),
  // ---- connection lifecycle ----
  /** Redial: exponential from `redialBase`, jittered, capped at `redialCap`. */
  redialBase: Schema.optionalWith(DurationSetting, { default: () => Duration.millis(100) }),
  redialFactor: Schema.optionalWith(Schema.Number.pipe(Schema.greaterThanOrEqualTo(1)), { default: () => 2 }),
  redialCap: Schema.optionalWith(DurationSetting, { default: () => Duration.seconds(30) }),
  /** A connection that lasted this long resets the redial schedule. */
  stableAfter: Schema.optionalWith(DurationSetting, { default: () => Duration.seconds(10) }),
  /**
   * Of each pair of validators one dials first (each node the half of the PeerId ring after it) and
   * the other gives it time to, at the start of each disconnected spell, before dialling itself:
   * when both want a connection at once (a whole network starting), one TLS handshake per pair
   * instead of two. This long per `maxConcurrentDials` validators the peer dials first before this
   * node, and on while other peers' first dials keep arriving (this long after the last), at most
   * `redialCap` in all. 0: both dial at once.
   */
  dialGrace: Schema.optionalWith(DurationSetting, { default: () => Duration.seconds(3) }),
  /**
   * Dials (TLS handshakes) this node runs at once at most; the others wait their turn, untimed.
   * Fewer while dials are slow (`slowDialAfter`).
   */
  maxConcurrentDials: Schema.optionalWith(Schema.Int.pipe(Schema.positive()), { default: () => 8 }),
  /**
   * A dial that took longer than this (or timed out) means the node, or the path, is congested:
   * the dials run at once are halved, then grow back with fast dials (a window from 1 to
   * `maxConcurrentDials`, as TCP keeps over its segments). Keep it under the transport's
   * `handshakeTimeout` (5 s), so that the window shrinks before dials time out.
   */
  slowDialAfter: Schema.optionalWith(DurationSetting, { default: () => Duration.seconds(3) }),
  // ---- health ----
  heartbeatInterval: Schema.optionalWith(DurationSetting, { default: () => Duration.seconds(1) }),
  /**
   * This many ticks in a row with a ping unanswered and nothing at all heard from the peer (its own
   * pings count: a slow peer is not a dead one): it is unhealthy, its connection closed and redialled.
   */
  missedHeartbeats: Schema.optionalWith(Schema.Int.pipe(Schema.positive()), { default: () => 3 }),
  /** Weight of the newest RTT sample in the moving average. */
  rttSmoothing: Schema.optionalWith(Schema.Number.pipe(Schema.between(0, 1)), { default: () => 0.2 }),
  // ---- inbound rate limits ----
  rateLimits: Schema.optionalWith(Schema.Array(ChannelRateLimit), { default: () => defaultRateLimits }),
  /** A flooding peer is reported (RateLimitExceeded) at most once per interval. */
  rateLimitReportInterval: Schema.optionalWith(DurationSetting, { default: () => Duration.seconds(1) }),
  /**
   * Inbound connections of a known peer (one in the registry: a validator, or a peer seen before)
   * refused after its key was proven are published as a `Refused` event at most once per interval,
   * with the count since the last one.
   */
  refusalEventInterval: Schema.optionalWith(DurationSetting, { default: () => Duration.seconds(10) }),
  // ---- admission and persistence ----
  /** Admit authenticated peers outside the validator set. */
  admitNonValidators: Schema.optionalWith(Schema.Boolean, { default: () => false }),
  /** Non-validator peers the registry keeps; past it the least recently seen idle one is forgotten. */
  maxKnownPeers: Schema.optionalWith(Schema.Int.pipe(Schema.positive()), { default: () => 10_000 }),
  /** Addresses kept per peer (config addresses always are). */
  maxAddressesPerPeer: Schema.optionalWith(Schema.Int.pipe(Schema.positive()), { default: () => 32 }),
  /** Peer events buffered for a slow subscriber of `changes` (the oldest are dropped past it). */
  changesBuffer: Schema.optionalWith(Schema.Int.pipe(Schema.positive()), { default: () => 16_384 }),
  /** Where bans and the address book survive a restart; none: in memory only. */
  dataDirectory: Schema.optional(Schema.String),
  /** Frames from one peer waiting for the consumer of `inbound`; past it that peer's reader waits. */
  inboundFramesPerPeer: Schema.optionalWith(Schema.Int.pipe(Schema.positive()), { default: () => 1024 }),
  /** Message bytes from one peer waiting for the consumer of `inbound`. */
  inboundBytesPerPeer: Schema.optionalWith(Schema.Int.pipe(Schema.positive()), { default: () => 16 * MiB }),
  /**
   * Message bytes from all peers waiting for the consumer of `inbound`: past it, a peer with a frame
   * queued already waits (its reader, then its socket), so the node holds at most this plus one frame
   * per peer.
   */
  inboundBytesTotal: Schema.optionalWith(Schema.Int.pipe(Schema.positive()), { default: () => 256 * MiB }),
  // ---- connection budget ----
  /**
   * The high watermark: with more validators (this node left out) than this, the node is in budget
   * mode (it dials only the peers it wants or sends to) and, holding more connections than this,
   * closes the least recently used idle ones down to `trimTo`. At or above the set size: full mesh.
   */
  maxConnections: Schema.optionalWith(Schema.Int.pipe(Schema.positive()), {
    default: () => defaultMaxConnections
  }),
  /** A connection that carried application data (sent or received) within this long is never trimmed. */
  idleBeforeTrim: Schema.optionalWith(DurationSetting, { default: () => Duration.seconds(10) })
}

const Checked = Schema.Struct({
  ...fields,
  /** The low watermark: what a trim closes connections down to. Default: 90% of `maxConnections`. */
  trimTo: Schema.optional(Schema.Int.pipe(Schema.nonNegative()))
}).pipe(
  Schema.filter((c) =>
    c.banThreshold < -c.maxScore
      ? { path: ["banThreshold"], message: "must be at least -maxScore, or no score can reach it" }
      : !Duration.isFinite(c.banCap)
        ? { path: ["banCap"], message: "must be finite: a validator is never banned for good" }
        : c.trimTo !== undefined && c.trimTo > c.maxConnections
          ? { path: ["trimTo"], message: `must be at most maxConnections (${c.maxConnections})` }
          : undefined
  )
)

const Filled = Schema.typeSchema(Schema.Struct({ ...fields, trimTo: Schema.Int.pipe(Schema.nonNegative()) }))

/** The peers config: every field filled in (`trimTo` from `maxConnections` when not given). */
export const PeersConfig = Schema.transform(Checked, Filled, {
  strict: true,
  decode: (c) => ({ ...c, trimTo: c.trimTo ?? Math.floor(c.maxConnections * defaultTrimShare) }),
  encode: (c) => c
})
export type PeersConfig = typeof PeersConfig.Type
export type PeersConfigInput = typeof PeersConfig.Encoded

/** A config field out of range. */
export class InvalidPeersConfig extends Schema.TaggedError<InvalidPeersConfig>()("InvalidPeersConfig", {
  field: Schema.String,
  detail: Schema.String
}) {
  override get message() {
    return `peers config ${this.field}: ${this.detail}`
  }
}

/** Validates and fills in defaults; a bad field is named with the form it expects. */
export const decode: (input: PeersConfigInput) => Either.Either<PeersConfig, InvalidPeersConfig> =
  TransportConfig.decodeWith(PeersConfig, (field, detail) => new InvalidPeersConfig({ field, detail }))
