/**
 * Every transport limit and channel as a named, Schema-validated field with a documented default.
 * `decode` takes a plain object (from code, JSON or env) and fills in defaults; durations are given
 * as milliseconds or as strings like "5 seconds".
 */
import * as Duration from "effect/Duration"
import * as Either from "effect/Either"
import * as ParseResult from "effect/ParseResult"
import * as Schema from "effect/Schema"
import { InvalidTransportConfig } from "./TransportError.js"

/** A duration: a `Duration`, a number of milliseconds, or text such as "5 seconds". */
export const DurationSetting = Schema.transformOrFail(
  Schema.Union(Schema.DurationFromSelf, Schema.Number, Schema.String),
  Schema.DurationFromSelf,
  {
    strict: true,
    decode: (input, _, ast) => {
      const decoded = Duration.decodeUnknown(input)
      return decoded._tag === "Some" && Duration.greaterThanOrEqualTo(decoded.value, Duration.zero)
        ? ParseResult.succeed(decoded.value)
        : ParseResult.fail(
            new ParseResult.Type(ast, input, `expected a duration such as 5000 or "5 seconds"`)
          )
    },
    encode: (duration) => ParseResult.succeed(Duration.toMillis(duration))
  }
)

const PositiveInt = Schema.Int.pipe(Schema.positive())

/** What a full channel queue does with one more frame. */
export const OverflowPolicy = Schema.Literal(
  /** Fail `send` at once with `Backpressure`; nothing is queued. */
  "reject",
  /** Drop the new frame, count it, and succeed. */
  "drop-newest",
  /** Drop the oldest queued frame to make room, count it, and succeed. */
  "drop-oldest"
)
export type OverflowPolicy = typeof OverflowPolicy.Type

export const ChannelConfig = Schema.Struct({
  /** The channel byte in frame headers (255 is reserved for the transport's own control frames). */
  id: Schema.Int.pipe(Schema.between(0, 254)),
  name: Schema.String,
  /** 0 is served first; channels of equal priority share in turn. */
  priority: Schema.Int.pipe(Schema.between(0, 7)),
  maxQueuedFrames: PositiveInt,
  maxQueuedBytes: PositiveInt,
  overflow: OverflowPolicy,
  /** Deflate frames of at least `compressionThreshold` bytes on this channel. */
  compression: Schema.Literal("none", "deflate")
})
export interface ChannelConfig extends Schema.Schema.Type<typeof ChannelConfig> {}

/** The channels every validator network uses, by id. */
export const Channel = {
  heartbeat: 0,
  consensus: 1,
  control: 2,
  discovery: 3,
  sync: 4
} as const

const MiB = 1024 * 1024

/**
 * Heartbeat and consensus/control first, then discovery, then sync: a vote never waits behind a
 * block. Consensus refuses rather than drops (the caller decides); heartbeats keep only the newest;
 * discovery drops what does not fit; sync is compressed and refuses when full.
 */
export const defaultChannels: ReadonlyArray<ChannelConfig> = [
  {
    id: 0,
    name: "heartbeat",
    priority: 0,
    maxQueuedFrames: 16,
    maxQueuedBytes: 64 * 1024,
    overflow: "drop-oldest",
    compression: "none"
  },
  {
    id: 1,
    name: "consensus",
    priority: 0,
    maxQueuedFrames: 4096,
    maxQueuedBytes: 64 * MiB,
    overflow: "reject",
    compression: "none"
  },
  {
    id: 2,
    name: "control",
    priority: 0,
    maxQueuedFrames: 1024,
    maxQueuedBytes: 16 * MiB,
    overflow: "reject",
    compression: "none"
  },
  {
    id: 3,
    name: "discovery",
    priority: 1,
    maxQueuedFrames: 256,
    maxQueuedBytes: 4 * MiB,
    overflow: "drop-newest",
    compression: "none"
  },
  {
    id: 4,
    name: "sync",
    priority: 2,
    maxQueuedFrames: 256,
    maxQueuedBytes: 128 * MiB,
    overflow: "reject",
    compression: "deflate"
  }
]

export const TransportConfig = Schema.Struct({
  /** Nodes of different networks refuse each other at the handshake. */
  networkId: Schema.String.pipe(Schema.minLength(1), Schema.maxLength(64)),
  channels: Schema.optionalWith(Schema.Array(ChannelConfig).pipe(Schema.minItems(1)), {
    default: () => defaultChannels
  }),
  /** Largest frame body accepted or sent (bytes). */
  maxFrameBytes: Schema.optionalWith(PositiveInt.pipe(Schema.lessThanOrEqualTo(0xffffffff)), {
    default: () => 16 * MiB
  }),
  /** Largest inflated body of a compressed frame (bytes). */
  maxDecompressedBytes: Schema.optionalWith(PositiveInt, { default: () => 64 * MiB }),
  /**
   * Largest ratio of a compressed frame's inflated size to its size on the wire: past it the frame
   * is a protocol error (a bomb), and this side sends such a body uncompressed.
   */
  maxInflationRatio: Schema.optionalWith(PositiveInt, { default: () => 64 }),
  /**
   * Compressed frames that inflate to more than this are inflated off the event loop (zlib's thread
   * pool), the connection's later frames held behind them in order: inflating 64 MiB at once would
   * stall every connection for about half a second.
   */
  maxInlineInflateBytes: Schema.optionalWith(PositiveInt, { default: () => 256 * 1024 }),
  maxMessagesPerFrame: Schema.optionalWith(PositiveInt, { default: () => 4096 }),
  /** Frames of at least this many bytes are deflated on channels with compression. */
  compressionThreshold: Schema.optionalWith(PositiveInt, { default: () => 64 * 1024 }),
  /** From the first byte to an authenticated connection, both ways. */
  handshakeTimeout: Schema.optionalWith(DurationSetting, { default: () => Duration.seconds(5) }),
  /** Handshakes in progress at once on a listener; more are refused at once. */
  maxConcurrentHandshakes: Schema.optionalWith(PositiveInt, { default: () => 256 }),
  /**
   * Of `maxConcurrentHandshakes`, the slots kept for attempts from hosts the listener's `reserved`
   * option names (validators' hosts): a flood of handshakes from elsewhere fills the others only.
   * None are kept by a listener without that option. Default: a quarter of
   * `maxConcurrentHandshakes` (64 of 256).
   */
  reservedHandshakes: Schema.optional(Schema.Int.pipe(Schema.nonNegative())),
  /** Authenticated inbound connections at once on a listener. */
  maxInboundConnections: Schema.optionalWith(PositiveInt, { default: () => 1024 }),
  /** Inbound connections (and handshakes) at once from one remote IP. */
  maxConnectionsPerIp: Schema.optionalWith(PositiveInt, { default: () => 16 }),
  /** A hello whose timestamp is further than this from the local clock is stale. */
  maxClockSkew: Schema.optionalWith(DurationSetting, { default: () => Duration.seconds(30) }),
  /** The most bytes coalesced into one socket write; bounds how long a vote can wait behind a write. */
  maxWriteBytes: Schema.optionalWith(PositiveInt, { default: () => 256 * 1024 }),
  /** Inbound frames buffered per connection before the socket is paused (TCP backpressure). */
  maxInboundFrames: Schema.optionalWith(PositiveInt, { default: () => 1024 }),
  /** Inbound message bytes buffered per connection before the socket is paused. */
  maxInboundBytes: Schema.optionalWith(PositiveInt, { default: () => 64 * MiB }),
  /**
   * Inbound message bytes buffered for consumers over all of this node's connections: past it, each
   * connection that queues one more frame pauses its socket until the consumers catch up.
   */
  maxBufferedInboundBytes: Schema.optionalWith(PositiveInt, { default: () => 256 * MiB }),
  /**
   * Bytes queued outbound over all of this node's connections: past it a send is refused with
   * `Backpressure` (`limit: "node"`) on a `reject` channel, and dropped and counted on the others.
   */
  maxQueuedOutboundBytes: Schema.optionalWith(PositiveInt, { default: () => 1024 * MiB }),
  /** On close, how long queued frames may take to flush before the socket is cut. */
  closeTimeout: Schema.optionalWith(DurationSetting, { default: () => Duration.seconds(2) }),
  /**
   * Refused inbound attempts are logged as one line per interval with their counts by reason (the
   * first refusal after a quiet interval at once): a flood of refusals is not a flood of log lines.
   */
  refusalLogInterval: Schema.optionalWith(DurationSetting, { default: () => Duration.seconds(10) })
}).pipe(
  Schema.filter((c) => {
    const ids = new Set(c.channels.map((ch) => ch.id))
    if (ids.size !== c.channels.length) return "channel ids must be distinct"
    return c.reservedHandshakes === undefined || c.reservedHandshakes < c.maxConcurrentHandshakes
      ? true
      : {
          path: ["reservedHandshakes"],
          message: `must be less than maxConcurrentHandshakes (${c.maxConcurrentHandshakes})`
        }
  })
)
export type TransportConfig = typeof TransportConfig.Type

/** The handshake slots kept for reserved hosts: `reservedHandshakes`, or a quarter of the total. */
export const reservedHandshakesOf = (config: TransportConfig): number =>
  config.reservedHandshakes ?? Math.floor(config.maxConcurrentHandshakes / 4)
export type TransportConfigInput = typeof TransportConfig.Encoded

/**
 * A decoder for a config Schema: fills defaults, and turns the first issue into `onError(field,
 * detail)`, so a bad config names the field and the form it expects. Every package's config uses it.
 */
export const decodeWith = <A, I, E>(
  schema: Schema.Schema<A, I>,
  onError: (field: string, detail: string) => E
): ((input: I) => Either.Either<A, E>) => {
  const decodeEither = Schema.decodeUnknownEither(schema)
  return (input) =>
    Either.mapLeft(decodeEither(input), (error) => {
      const [issue] = ParseResult.ArrayFormatter.formatErrorSync(error)
      return onError(issue?.path.join(".") || "<root>", issue?.message ?? error.message)
    })
}

/** Validates options and fills in defaults; a bad field is named with the form it expects. */
export const decode: (input: TransportConfigInput) => Either.Either<TransportConfig, InvalidTransportConfig> =
  decodeWith(TransportConfig, (field, detail) => new InvalidTransportConfig({ field, detail }))
