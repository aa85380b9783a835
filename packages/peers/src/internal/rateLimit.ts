// Inbound rate limits: per peer and channel, token buckets of messages/s and bytes/s, kept in the
// peer's slot across reconnects and run on the monotonic clock. Synchronous: the data callback's
// fast path charges frames here without an Effect.
import type { Transport } from "@hotstuff2/transport"
import * as Duration from "effect/Duration"
import * as PeersConfig from "../PeersConfig.js"
import type { Slot } from "./slot.js"

/** A token bucket refilled continuously; times in monotonic milliseconds. */
export class Bucket {
  tokens: number
  at: number
  constructor(
    readonly rate: number,
    readonly capacity: number,
    now: number
  ) {
    this.tokens = capacity
    this.at = now
  }

  refill(now: number): void {
    // A clock that went backwards refills nothing (and drains nothing).
    this.tokens = Math.min(this.capacity, this.tokens + (Math.max(0, now - this.at) / 1000) * this.rate)
    this.at = Math.max(this.at, now)
  }

  take(n: number, now: number): boolean {
    this.refill(now)
    if (this.tokens < n) return false
    this.tokens -= n
    return true
  }
}

export interface RateLimiter {
  /**
   * Inbound rate limit: whether the whole frame is within the peer's budget on its channel (then
   * charged). A frame that came compressed paid its bytes before it was inflated (`admitCompressed`):
   * only its messages are counted here.
   */
  readonly withinLimits: (slot: Slot, frame: Transport.InboundFrame, at: number) => boolean
  /**
   * How many of the frame's messages, from the first, are within the peer's budget (charged for
   * them). A sender joins the sends of a turn into one frame: the frame is cut where the budget
   * runs out, as the sends would have been one by one, not dropped whole.
   */
  readonly admittedCount: (slot: Slot, frame: Transport.InboundFrame, at: number) => number
  /**
   * Before a compressed frame is inflated: it pays what it will cost (its declared inflated size)
   * from the peer's byte budget on its channel, or is dropped uninflated and counted, so a flood of
   * compressed frames is cut before it costs any inflation. The reader reports it.
   */
  readonly admitCompressedFor: (slot: Slot) => (channel: number, bytes: number) => boolean
  /**
   * Counts `dropped` messages of the peer's over its limits; true when the peer is due a
   * `RateLimitExceeded` report (at most one per `rateLimitReportInterval`).
   */
  readonly countDropped: (slot: Slot, dropped: number, at: number) => boolean
}

export const makeRateLimiter = (config: PeersConfig.PeersConfig, now: () => number): RateLimiter => {
  // Limits given for some channels replace those channels' defaults; the others keep theirs.
  const limits = new Map(PeersConfig.defaultRateLimits.map((l) => [l.channel, l]))
  for (const limit of config.rateLimits) limits.set(limit.channel, limit)
  const reportEvery = Duration.toMillis(config.rateLimitReportInterval)

  /** The peer's buckets on `channel`, made at its first frame there; undefined when it has no limit. */
  const bucketsOf = (slot: Slot, channel: number, at: number) => {
    const limit = limits.get(channel)
    if (limit === undefined) return undefined
    let buckets = slot.buckets.get(channel)
    if (buckets === undefined) {
      buckets = {
        messages: new Bucket(limit.messagesPerSecond, limit.messagesPerSecond * limit.burstSeconds, at),
        bytes: new Bucket(limit.bytesPerSecond, limit.bytesPerSecond * limit.burstSeconds, at)
      }
      slot.buckets.set(channel, buckets)
    }
    return buckets
  }

  const withinLimits = (slot: Slot, frame: Transport.InboundFrame, at: number): boolean => {
    const buckets = bucketsOf(slot, frame.channel, at)
    if (buckets === undefined) return true
    let bytes = 0
    if (frame.compressed !== true) for (const m of frame.messages) bytes += m.length
    // Both buckets are charged, or neither.
    if (!buckets.messages.take(frame.messages.length, at)) return false
    if (!buckets.bytes.take(bytes, at)) {
      buckets.messages.tokens += frame.messages.length
      return false
    }
    return true
  }

  const admittedCount = (slot: Slot, frame: Transport.InboundFrame, at: number): number => {
    if (withinLimits(slot, frame, at)) return frame.messages.length
    const buckets = bucketsOf(slot, frame.channel, at)!
    buckets.messages.refill(at)
    buckets.bytes.refill(at)
    let n = 0
    let bytes = 0
    const paid = frame.compressed === true
    while (
      n < frame.messages.length &&
      n + 1 <= buckets.messages.tokens &&
      (paid || bytes + frame.messages[n]!.length <= buckets.bytes.tokens)
    ) {
      if (!paid) bytes += frame.messages[n]!.length
      n++
    }
    buckets.messages.tokens -= n
    buckets.bytes.tokens -= bytes
    return n
  }

  const admitCompressedFor =
    (slot: Slot) =>
    (channel: number, bytes: number): boolean => {
      const buckets = bucketsOf(slot, channel, now())
      if (buckets === undefined || buckets.bytes.take(bytes, now())) return true
      slot.dropped++
      slot.compressedDropped = true
      return false
    }

  const countDropped = (slot: Slot, dropped: number, at: number): boolean => {
    slot.dropped += dropped
    if (at - slot.lastRateReport < reportEvery) return false
    slot.lastRateReport = at
    return true
  }

  return { withinLimits, admittedCount, admitCompressedFor, countDropped }
}
