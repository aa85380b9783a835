/**
 * Every broadcast limit as a named, Schema-validated field with a default: the strategy, and how
 * many sequence numbers per origin are remembered to drop duplicates.
 */
import { TransportConfig } from "@hotstuff2/transport"
import type * as Either from "effect/Either"
import * as Schema from "effect/Schema"

/**
 * How a broadcast reaches the validators. `direct`: the origin sends to every validator itself, in
 * parallel, each through its own per-peer queue. (Tree and adaptive strategies come later.)
 */
export const Strategy = Schema.Literal("direct")
export type Strategy = typeof Strategy.Type

export const BroadcastConfig = Schema.Struct({
  strategy: Schema.optionalWith(Strategy, { default: () => "direct" as const }),
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
  loopbackBuffer: Schema.optionalWith(Schema.Int.pipe(Schema.positive()), { default: () => 1024 })
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

/** Validates and fills in defaults; a bad field is named with the form it expects. */
export const decode: (input: BroadcastConfigInput) => Either.Either<BroadcastConfig, InvalidBroadcastConfig> =
  TransportConfig.decodeWith(
    BroadcastConfig,
    (field, detail) => new InvalidBroadcastConfig({ field, detail })
  )
