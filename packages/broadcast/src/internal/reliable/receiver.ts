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
  /** Below the first floor of the current incarnation: what the origin no longer sends anyway. */
  base: bigint
  /** The highest sequence the consumer has finished with (it asked for the chunk after it). */
  ackable: bigint
  /** The highest sequence handed out with the last chunk: acknowledgeable at the next pull. */
  handed: bigint | undefined
  /** Released by the timer (a gap given up): handed out with the next pull, acknowledgeable after. */
  released: bigint | undefined
}

export interface ReliableReceiver {
  /** A reliable slot from `peer` (its origin): what it releases, in order, and what it was. */
  readonly offer: (peer: PeerId, channel: number, header: Payload.ReliableHeader) => Offered<Held>
  /**
   * The end of a chunk of frames: records what it hands out (acknowledged once the consumer pulls
   * again) and sends the acks owed now.
   */
  readonly flush: () => void
  /** The consumer asks for its next chunk: it is done with the last one, whose messages are now acknowledged. */
  readonly pulled: () => void
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
  /** Origins whose streams moved in the chunk being handled. */
  const touched = new Set<PeerId>()
  /** Origins with messages handed out (or released) and not yet acknowledgeable: the pull's work. */
  const handing = new Set<PeerId>()

  const originOf = (peer: PeerId): OriginStream => {
    let os = origins.get(peer)
    if (os === undefined) {
      os = {
        stream: new ReorderStream<Held>(reorder),
        unacked: 0,
        ackNow: false,
        ackDueAt: undefined,
        lastAckAt: Number.NEGATIVE_INFINITY,
        base: 0n,
        ackable: 0n,
        handed: undefined,
        released: undefined
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
    // Only what the consumer finished with is acknowledged: a crash while it handles a chunk, or a
    // consumer that stops in the middle of one, leaves the rest to be sent again.
    const finished = os.ackable > os.base ? os.ackable : os.base
    const cumulative = finished < state.cumulative ? finished : state.cumulative
    // What was delivered but is not finished with is still held here: a first range says so, and
    // the origin does not send it again.
    const ranges =
      cumulative < state.cumulative
        ? [{ first: cumulative + 1n, last: state.cumulative }, ...state.ranges].slice(
            0,
            Message.MAX_ACK_RANGES
          )
        : state.ranges
    const encoded = Codec.encode(Message.Ack.make({ incarnation: state.incarnation, cumulative, ranges }))
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
    if (os.stream.incarnation !== before) {
      // A new stream (a first message, or the origin restarted): it starts at this floor.
      os.base = header.floor > 1n ? header.floor - 1n : 0n
      os.ackable = 0n
      os.handed = undefined
      os.released = undefined
    }
    if (offered.skipped > 0) {
      const restarted = before !== undefined && os.stream.incarnation !== before
      observer.gapSkipped?.(peer, offered.skipped, restarted ? "restart" : "cancelled")
    }
    if (offered.deliver.length > 0 || offered.skipped > 0) touched.add(peer)
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
      case "buffered":
        // Held above a gap: the origin learns of it as a range, so it sends only what is missing.
        owe(peer, os, 0, now)
        break
      // Delivered: acknowledged once the consumer asks for the chunk after this one (`pulled`).
    }
    return offered
  }

  /** The end of a chunk of frames: what it handed out becomes acknowledgeable at the next pull. */
  const handOut = (): void => {
    for (const peer of touched) {
      const os = origins.get(peer)
      if (os === undefined) continue
      const next = os.stream.next
      if (next !== undefined) {
        os.handed = next - 1n
        handing.add(peer)
      }
    }
    touched.clear()
  }

  const pulled: ReliableReceiver["pulled"] = () => {
    if (handing.size === 0) return
    const now = core.now()
    for (const peer of handing) {
      const os = origins.get(peer)
      if (os === undefined || (os.handed === undefined && os.released === undefined)) {
        handing.delete(peer)
        continue
      }
      if (os.handed !== undefined && os.handed > os.ackable) {
        owe(peer, os, Number(os.handed - os.ackable), now)
        os.ackable = os.handed
      }
      os.handed = os.released
      os.released = undefined
      if (os.handed === undefined) handing.delete(peer)
    }
  }

  /** Whether an ack to `os` may go now: owed at once, and not within `ackDelay` of the last one. */
  const dueNow = (os: OriginStream, now: number): boolean =>
    now - os.lastAckAt >= ackDelay &&
    (os.ackNow || os.unacked >= config.ackEvery || (os.ackDueAt !== undefined && os.ackDueAt <= now))

  const flush = (): void => {
    handOut()
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
      if (expired.deliver.length > 0 || expired.skipped > 0) {
        if (expired.deliver.length > 0) released.push({ peer, held: expired.deliver })
        const next = os.stream.next
        if (next !== undefined) {
          os.released = next - 1n
          handing.add(peer)
        }
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

  return { offer, flush, pulled, tick }
}
