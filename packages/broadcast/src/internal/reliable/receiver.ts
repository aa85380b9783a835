// The receiving side of reliable delivery: per origin, a reorder buffer over the origin's stream to
// this node (delivered once, in sequence order, across reconnects and channels), and the
// acknowledgements back: one `Ack` per origin on the heartbeat channel, sent once `ackEvery`
// messages were delivered, when a duplicate shows the origin is retransmitting, or `ackDelay` after
// the first delivery it covers. A gap that does not close within `gapTimeout` is skipped (counted).
import { TransportConfig } from "@hotstuff2/transport"
import { Codec, type Identity, Message } from "@hotstuff2/wire"
import * as Duration from "effect/Duration"
import * as Either from "effect/Either"
import type { Core } from "../core.js"
import type * as Payload from "../payload.js"
import { type Offered, ReorderStream } from "./reorder.js"

type PeerId = Identity.PeerId

/** A reliable message held or delivered: the slot it carried and where it was in its stream. */
export interface Held {
  readonly channel: number
  readonly slot: Uint8Array
  readonly incarnation: bigint
  readonly sequence: bigint
}

interface OriginStream {
  readonly stream: ReorderStream<Held>
  /** Deliveries (and skips) since the last ack sent. */
  unacked: number
  /** Send the ack with the next flush: a duplicate came (the origin is retransmitting). */
  ackNow: boolean
  /** Clock millis by which an ack is owed. */
  ackDueAt: number | undefined
  /** Clock millis of the last ack sent: acks to one origin are at least `ackDelay` apart. */
  lastAckAt: number
}

export interface ReliableReceiver {
  /** A reliable slot from `peer` (its origin): what it releases, in order, and what it was. */
  readonly offer: (peer: PeerId, channel: number, header: Payload.ReliableHeader) => Offered<Held>
  /** Sends the acks owed now (at the end of each chunk of frames). */
  readonly flush: () => void
  /** One pass of the timer: delayed acks, and gaps given up (their held messages, to deliver). */
  readonly tick: (now: number) => {
    readonly released: ReadonlyArray<{ readonly peer: PeerId; readonly held: ReadonlyArray<Held> }>
    /** When the next ack is owed or the next gap is given up, if any. */
    readonly next: number | undefined
  }
}

const HEARTBEAT = TransportConfig.Channel.heartbeat

export const makeReliableReceiver = (core: Core, wake: (at: number) => void): ReliableReceiver => {
  const { config, manager, observer } = core
  const ackDelay = Duration.toMillis(config.ackDelay)
  const reorder = {
    window: config.reorderWindow,
    gapTimeoutMillis: Duration.toMillis(config.gapTimeout),
    maxRanges: Message.MAX_ACK_RANGES
  }
  const origins = new Map<PeerId, OriginStream>()
  /** Origins that owe an ack. */
  const owing = new Set<PeerId>()

  const originOf = (peer: PeerId): OriginStream => {
    let os = origins.get(peer)
    if (os === undefined) {
      os = {
        stream: new ReorderStream<Held>(reorder),
        unacked: 0,
        ackNow: false,
        ackDueAt: undefined,
        lastAckAt: Number.NEGATIVE_INFINITY
      }
      origins.set(peer, os)
      // Peers outside the validator set (admitted by configuration) are forgotten first past the bound.
      if (origins.size > core.validators.size + config.maxOrigins) {
        for (const other of origins.keys()) {
          if (!core.validators.has(other) && other !== peer) {
            origins.delete(other)
            owing.delete(other)
            break
          }
        }
      }
    }
    return os
  }

  const sendAck = (peer: PeerId, os: OriginStream, now: number): void => {
    owing.delete(peer)
    os.unacked = 0
    os.ackNow = false
    os.ackDueAt = undefined
    os.lastAckAt = now
    const state = os.stream.ack()
    if (state === undefined) return
    const encoded = Codec.encode(Message.Ack.make(state))
    // A full heartbeat queue or a lost connection loses this ack only: the next one covers it.
    if (Either.isRight(encoded)) manager.unsafeSend(peer, HEARTBEAT, [encoded.right])
  }

  /** When the ack owed to `os` may go. */
  const ackAt = (os: OriginStream, now: number): number =>
    Math.max(os.lastAckAt + ackDelay, os.ackNow ? now : (os.ackDueAt ?? now))

  const owe = (peer: PeerId, os: OriginStream, delivered: number, now: number): void => {
    os.unacked += delivered
    os.ackDueAt ??= now + ackDelay
    owing.add(peer)
    wake(ackAt(os, now))
    const gap = os.stream.gapDeadline
    if (gap !== undefined) wake(gap)
  }

  const offer: ReliableReceiver["offer"] = (peer, channel, header) => {
    const os = originOf(peer)
    const now = core.now()
    const before = os.stream.incarnation
    const held: Held = {
      channel,
      slot: header.inner,
      incarnation: header.incarnation,
      sequence: header.sequence
    }
    const offered = os.stream.offer(header.incarnation, header.sequence, header.floor, held, now)
    if (offered.skipped > 0) {
      const restarted = before !== undefined && os.stream.incarnation !== before
      observer.gapSkipped?.(peer, offered.skipped, restarted ? "restart" : "cancelled")
    }
    switch (offered.outcome) {
      case "duplicate":
        // The origin did not hear of it: tell it with the next flush.
        observer.reliableDropped?.(peer, "duplicate")
        os.ackNow = true
        owe(peer, os, 0, now)
        break
      case "stale":
      case "beyond-window":
        observer.reliableDropped?.(peer, offered.outcome)
        break
      default:
        // Delivered or held: either way the origin learns of it (held ones as ranges).
        owe(peer, os, offered.deliver.length + offered.skipped, now)
    }
    return offered
  }

  /** Whether an ack to `os` may go now: owed at once, and not within `ackDelay` of the last one. */
  const dueNow = (os: OriginStream, now: number): boolean =>
    now - os.lastAckAt >= ackDelay &&
    (os.ackNow || os.unacked >= config.ackEvery || (os.ackDueAt !== undefined && os.ackDueAt <= now))

  const flush = (): void => {
    if (owing.size === 0) return
    const now = core.now()
    for (const peer of owing) {
      const os = origins.get(peer)
      if (os === undefined) owing.delete(peer)
      else if (dueNow(os, now)) sendAck(peer, os, now)
    }
  }

  const tick: ReliableReceiver["tick"] = (now) => {
    const released: Array<{ readonly peer: PeerId; readonly held: ReadonlyArray<Held> }> = []
    let next: number | undefined
    const later = (at: number | undefined) => {
      if (at !== undefined && (next === undefined || at < next)) next = at
    }
    for (const [peer, os] of origins) {
      if (os.stream.buffered === 0) continue
      const expired = os.stream.expire(now)
      if (expired.skipped > 0) observer.gapSkipped?.(peer, expired.skipped, "timeout")
      if (expired.deliver.length > 0) {
        released.push({ peer, held: expired.deliver })
        os.unacked += expired.deliver.length + expired.skipped
        os.ackDueAt ??= now + ackDelay
        owing.add(peer)
      }
      later(os.stream.gapDeadline)
    }
    for (const peer of owing) {
      const os = origins.get(peer)
      if (os === undefined) owing.delete(peer)
      else if (ackAt(os, now) <= now) sendAck(peer, os, now)
      else later(ackAt(os, now))
    }
    return { released, next }
  }

  return { offer, flush, tick }
}
