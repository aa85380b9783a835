/**
 * Every broadcast limit as a named, Schema-validated field with a default: the strategy and its tree
 * parameters, and how many sequence numbers per origin are remembered to drop duplicates.
 */
import { TransportConfig } from "@hotstuff2/transport"
import type { Message } from "@hotstuff2/wire"
import * as Duration from "effect/Duration"
import * as Either from "effect/Either"
import * as Schema from "effect/Schema"

const { DurationSetting } = TransportConfig

/**
 * How a broadcast reaches the validators.
 * - `direct`: the origin sends to every validator itself, each through its own per-peer queue.
 * - `tree`: the origin sends to `fanout` validators, each of which relays to its own children in a
 *   tree drawn per origin and view, with receipts and repair (README, "Tree strategy").
 * - `adaptive`: per broadcast, whichever of the two the rule in the README expects to finish first.
 * Every validator of a network must run a version that knows tree slots before one uses `tree` or
 * `adaptive` (a version without them refuses the slot as malformed).
 */
export const Strategy = Schema.Literal("direct", "tree", "adaptive")
export type Strategy = typeof Strategy.Type

export const BroadcastConfig = Schema.Struct({
  strategy: Schema.optionalWith(Strategy, { default: () => "direct" as const }),
  /** Children per node in a tree; default ceil(sqrt(n)) within [2, 64] for n validators. */
  fanout: Schema.optional(Schema.Int.pipe(Schema.between(2, 1024))),
  /** Adaptive: below this many validators (this node included), broadcasts go direct. */
  treeMinValidators: Schema.optionalWith(Schema.Int.pipe(Schema.positive()), { default: () => 32 }),
  /** Adaptive: messages smaller than this (encoded bytes) go direct: their copies cost little upload. */
  treeMinBytes: Schema.optionalWith(Schema.Int.pipe(Schema.nonNegative()), { default: () => 16 * 1024 }),
  /** Adaptive: this node's upload in bytes per second, for the rule's estimates (default 1 Gbit/s). */
  uploadBytesPerSecond: Schema.optionalWith(Schema.Number.pipe(Schema.positive()), {
    default: () => 125_000_000
  }),
  /**
   * Tree: the origin sends a copy itself to every validator whose receipt has not come after
   * `repairRttFactor` x the children's highest RTT per level, plus the time to upload the copies,
   * within [repairAfterMin, repairAfterMax]; then again, twice as late, up to `repairRounds` times.
   */
  repairAfterMin: Schema.optionalWith(DurationSetting, { default: () => Duration.millis(50) }),
  repairAfterMax: Schema.optionalWith(DurationSetting, { default: () => Duration.seconds(2) }),
  repairRttFactor: Schema.optionalWith(Schema.Number.pipe(Schema.positive()), { default: () => 2 }),
  repairRounds: Schema.optionalWith(Schema.Int.pipe(Schema.between(1, 16)), { default: () => 3 }),
  /** Tree: a relay blamed this many times within `relayFailureMemory` is made a leaf in the next trees. */
  relayFailuresToDemote: Schema.optionalWith(Schema.Int.pipe(Schema.positive()), { default: () => 2 }),
  relayFailureMemory: Schema.optionalWith(DurationSetting, { default: () => Duration.seconds(60) }),
  /**
   * Adaptive: when, over the last 8 trees, the mean share of validators the origin had to repair
   * exceeds this, broadcasts go direct for `treeCooldown`.
   */
  treeFallbackShare: Schema.optionalWith(Schema.Number.pipe(Schema.between(0, 1)), { default: () => 0.25 }),
  treeCooldown: Schema.optionalWith(DurationSetting, { default: () => Duration.seconds(30) }),
  /** Tree broadcasts whose receipts are still awaited; past it the oldest is given up (counted). */
  maxPendingTrees: Schema.optionalWith(Schema.Int.pipe(Schema.positive()), { default: () => 256 }),
  /**
   * Sequence numbers remembered per origin: an envelope is a duplicate when its sequence was seen,
   * or is older than the newest seen from that origin by more than this window.
   */
  dedupWindow: Schema.optionalWith(Schema.Int.pipe(Schema.between(16, 1 << 20)), { default: () => 4096 }),
  /**
   * Origins outside the validator set (admitted with `admitNonValidators`) whose windows are kept;
   * past it the least recently heard is forgotten. Validators' windows are always kept.
   */
  maxOrigins: Schema.optionalWith(Schema.Int.pipe(Schema.positive()), { default: () => 1024 }),
  /** This node's own messages (`send` to itself) waiting for the consumer of `inbound`. */
  loopbackBuffer: Schema.optionalWith(Schema.Int.pipe(Schema.positive()), { default: () => 1024 }),
  /**
   * Message types sent reliably unless a call says `reliable: false`: retransmitted until
   * acknowledged, in this node's order, once (README, "Delivery guarantees"). Default: the
   * certificates, timeouts and new-views, whose loss stalls a view.
   */
  reliableMessages: Schema.optionalWith(Schema.Array(Schema.String), {
    default: () => ["QuorumCertificate", "TimeoutCertificate", "Timeout", "NewView"]
  }),
  /**
   * A reliable message not acknowledged after max(retransmitAfterMin, 2 x RTT + ackDelay) is sent
   * again, then twice as late each time, up to retransmitAfterMax; after a reconnect, at once.
   */
  retransmitAfterMin: Schema.optionalWith(DurationSetting, { default: () => Duration.millis(100) }),
  retransmitAfterMax: Schema.optionalWith(DurationSetting, { default: () => Duration.seconds(4) }),
  /** A receiver acknowledges within this long of delivering, or at once after `ackEvery` messages. */
  ackDelay: Schema.optionalWith(DurationSetting, { default: () => Duration.millis(10) }),
  ackEvery: Schema.optionalWith(Schema.Int.pipe(Schema.between(1, 4096)), { default: () => 64 }),
  /** Reliable messages not yet acknowledged by one peer (count, bytes): past either, `ReliableBufferFull`. */
  maxUnackedPerPeer: Schema.optionalWith(Schema.Int.pipe(Schema.positive()), { default: () => 16_384 }),
  maxUnackedBytesPerPeer: Schema.optionalWith(Schema.Int.pipe(Schema.positive()), {
    default: () => 64 * 1024 * 1024
  }),
  /** Distinct reliable messages (and their bytes, each counted once) held for every peer together. */
  maxUnackedMessages: Schema.optionalWith(Schema.Int.pipe(Schema.positive()), { default: () => 65_536 }),
  maxUnackedBytes: Schema.optionalWith(Schema.Int.pipe(Schema.positive()), {
    default: () => 256 * 1024 * 1024
  }),
  /** Reliable messages sent (first sends and retransmissions) per peer per pass of the sender's timer. */
  retransmitBurst: Schema.optionalWith(Schema.Int.pipe(Schema.positive()), { default: () => 1024 }),
  /**
   * Receiver: reliable messages held per origin ahead of a gap (a later one is dropped unacknowledged,
   * and sent again); a gap not closed within `gapTimeout` is skipped, counted and reported.
   */
  /**
   * Closing the broadcaster waits up to this long for its reliable messages to be acknowledged
   * (retransmitting meanwhile); what is still unacknowledged then is dropped with it. Default 0: no
   * wait. The wait runs on Effect's Clock, so under `TestClock` a close with messages held waits
   * until the test advances the clock.
   */
  drainTimeout: Schema.optionalWith(DurationSetting, { default: () => Duration.zero }),
  reorderWindow: Schema.optionalWith(Schema.Int.pipe(Schema.between(16, 65_536)), { default: () => 16_384 }),
  gapTimeout: Schema.optionalWith(DurationSetting, { default: () => Duration.seconds(30) })
})
export type BroadcastConfig = typeof BroadcastConfig.Type
export type BroadcastConfigInput = typeof BroadcastConfig.Encoded

/** A config field out of range. */
export class InvalidBroadcastConfig extends Schema.TaggedError<InvalidBroadcastConfig>()(
  "InvalidBroadcastConfig",
  { field: Schema.String, detail: Schema.String }
) {
  override get message() {
    return `broadcast config ${this.field}: ${this.detail}`
  }
}

const decodeFields = TransportConfig.decodeWith(
  BroadcastConfig,
  (field, detail) => new InvalidBroadcastConfig({ field, detail })
)

/** Validates and fills in defaults; a bad field is named with the form it expects. */
export const decode = (input: BroadcastConfigInput): Either.Either<BroadcastConfig, InvalidBroadcastConfig> =>
  Either.flatMap(decodeFields(input), (config) => {
    const pairs = [
      ["repairAfterMin", config.repairAfterMin, "repairAfterMax", config.repairAfterMax],
      ["retransmitAfterMin", config.retransmitAfterMin, "retransmitAfterMax", config.retransmitAfterMax]
    ] as const
    for (const [low, lowValue, high, highValue] of pairs) {
      if (Duration.greaterThan(lowValue, highValue)) {
        return Either.left(
          new InvalidBroadcastConfig({
            field: low,
            detail: `${Duration.format(lowValue)} is above ${high} (${Duration.format(highValue)})`
          })
        )
      }
    }
    const unknown = config.reliableMessages.find((tag) => !reliableCapable.has(tag))
    if (unknown !== undefined) {
      return Either.left(
        new InvalidBroadcastConfig({
          field: "reliableMessages",
          detail: `${unknown} is not a message type an application sends (one of ${[...reliableCapable].join(", ")})`
        })
      )
    }
    return Either.right(config)
  })

/** Message types an application sends: the ones `reliableMessages` may name. */
const reliableCapable: ReadonlySet<string> = new Set<Message.MessageTag>([
  "Proposal",
  "Vote",
  "QuorumCertificate",
  "NewView",
  "Timeout",
  "TimeoutCertificate",
  "SyncRequest",
  "SyncResponse",
  "AppMessage"
])
