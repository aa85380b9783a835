// The sending side of reliable delivery: one stream per receiver (sequence numbers 1, 2, ... of this
// node's incarnation), holding every reliable message that receiver has not acknowledged. Messages
// go out at once when the stream is not backed up, and again when not acknowledged in time (per
// message, backing off) or after a reconnect. Acknowledgements arrive on the heartbeat channel,
// synchronously (`onAck`); a receipt's handle waits for them (`awaitAcks`) or cancels the message.
import type { Identity, Message } from "@hotstuff2/wire"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Scope from "effect/Scope"
import { AcksUnreachable, type Reliable, type ReliableBuffer, ReliableBufferFull } from "../../Broadcaster.js"
import type { Core } from "../core.js"
import * as Payload from "../payload.js"
import { type Entry, UnackedStream } from "./unacked.js"

type PeerId = Identity.PeerId

interface Waiter {
  readonly quorum: number
  readonly among: ReadonlySet<PeerId> | undefined
  readonly resume: (effect: Effect.Effect<ReadonlyArray<PeerId>, AcksUnreachable>) => void
}

/** One reliable message: its entry in each recipient's stream, and who acknowledged it. */
interface Handle {
  readonly channel: number
  readonly tag: Message.MessageTag
  readonly bytes: number
  readonly entries: Map<PeerId, Entry<Handle>>
  readonly acked: Array<PeerId>
  /** Entries neither acknowledged nor cancelled: the message is held while any is. */
  live: number
  cancelled: boolean
  readonly waiters: Set<Waiter>
}

interface PeerStream {
  readonly peer: PeerId
  readonly stream: UnackedStream<Handle>
  /** A send failed (no connection, a full queue): new messages wait for the timer, in order. */
  blocked: boolean
  /** Smoothed time from a first send to its acknowledgement, millis (includes the ack delay). */
  srtt: number | undefined
  /**
   * Messages were sent a third time or more without an ack in between (a cut link, a dead peer):
   * the next ack from the peer shows it back, and everything it lacks goes again at once rather
   * than when each message's backed-off timer says.
   */
  backedOff: boolean
  /** Clock millis of the last ack from the peer (any). */
  lastAckAt: number
  /** The highest sequence the peer's acks have shown it has (acknowledged or held). */
  highestHeard: bigint
  /** Sends on this stream so far (each entry records the count at its last send). */
  sendCount: number
  /** The highest send count of a message the peer acknowledged: everything sent before it arrived. */
  heardOrder: number
  /** Clock millis of the last blind retransmission (see `pump`). */
  lastProbeAt: number
}

export interface ReliableSender {
  /**
   * Takes `inner` (a slot whose origin is this node) into the streams of `targets`, and sends it to
   * each now when it can. Fails when the node's buffer is full; a full peer is listed in `failed`.
   */
  readonly admit: (
    targets: ReadonlyArray<PeerId>,
    inner: Uint8Array,
    channel: number,
    tag: Message.MessageTag,
    scope: Scope.Scope | undefined
  ) => Effect.Effect<
    {
      readonly reliable: Reliable
      readonly queued: ReadonlyArray<PeerId>
      readonly failed: ReadonlyArray<{ readonly peer: PeerId; readonly error: ReliableBufferFull }>
    },
    ReliableBufferFull
  >
  /** An acknowledgement from `peer` (the peers layer calls it synchronously). */
  readonly onAck: (peer: PeerId, ack: Message.Ack) => void
  /** `peer` connected (again): everything it has not acknowledged goes out again, in order. */
  readonly onConnected: (peer: PeerId) => void
  /**
   * Stops retransmitting to peers outside `keep` (they left every tracked validator set): what was
   * held for them is dropped. Their streams stay, so a peer that comes back continues its numbering.
   */
  readonly forgetOthers: (keep: ReadonlySet<PeerId>) => void
  /** Everything held goes again now (closing: the last chance for acknowledgements). */
  readonly resendAll: () => void
  /** One pass of the timer: sends what is due; the next deadline while anything is held. */
  readonly tick: (now: number) => number | undefined
  readonly buffer: () => ReliableBuffer
}

export const makeReliableSender = (
  core: Core,
  incarnation: bigint,
  wake: (at: number) => void
): ReliableSender => {
  const { config, manager, observer } = core
  const minRto = Duration.toMillis(config.retransmitAfterMin)
  /** How soon a blocked stream (full queue, no connection) tries again. */
  const retry = Math.max(1, Duration.toMillis(config.ackDelay))
  const maxRto = Duration.toMillis(config.retransmitAfterMax)
  const streams = new Map<PeerId, PeerStream>()
  let messages = 0
  let bytes = 0
  let entries = 0

  const streamOf = (peer: PeerId): PeerStream => {
    let ps = streams.get(peer)
    if (ps === undefined) {
      ps = {
        peer,
        stream: new UnackedStream<Handle>(incarnation),
        blocked: false,
        srtt: undefined,
        backedOff: false,
        lastAckAt: Number.NEGATIVE_INFINITY,
        highestHeard: 0n,
        sendCount: 0,
        heardOrder: 0,
        lastProbeAt: Number.NEGATIVE_INFINITY
      }
      streams.set(peer, ps)
    }
    return ps
  }

  const rtoOf = (ps: PeerStream) => (entry: Entry<Handle>) => {
    const base = Math.max(minRto, ps.srtt === undefined ? 0 : 2 * ps.srtt)
    return Math.min(maxRto, base * 2 ** Math.max(0, entry.sends - 1))
  }

  /** Sends `entry` to `ps.peer` now; false when the peer's queue or connection would not take it. */
  const sendEntry = (ps: PeerStream, entry: Entry<Handle>, now: number): boolean => {
    const handle = entry.handle
    const slot = Payload.reliable(incarnation, entry.seq, ps.stream.floor(), entry.bytes)
    if (manager.unsafeSend(ps.peer, handle.channel, [slot]) !== undefined) return false
    ps.stream.markSent(entry, now)
    entry.order = ++ps.sendCount
    entry.copies++
    if (entry.sends === 1) observer.sent?.(ps.peer, handle.channel, handle.tag, slot.length)
    return true
  }

  /** Sends what is due to one peer, in order, until its queue or connection refuses. */
  const pump = (ps: PeerStream, now: number): void => {
    const rto = rtoOf(ps)
    const due = ps.stream.due(now, rto, config.retransmitBurst)
    let retransmitted = 0
    let handled = 0
    for (const entry of due) {
      // A message the peer's acks show a hole at was lost: one sent (last) before a message the peer
      // acknowledged (streams keep order), or below one it holds, in an ack that came after this
      // message was sent. Send it again. Any other may only be slow
      // to come back: still queued behind a burst, or at a peer whose consumer stopped reading. Of
      // those one probe per timeout without any ack goes, and the rest wait (their timers back off as if sent), so
      // neither a queue nor a paused peer is sent its backlog over and over.
      const lost =
        entry.order < ps.heardOrder ||
        (entry.seq < ps.highestHeard && entry.sentAt !== undefined && entry.sentAt < ps.lastAckAt)
      if (entry.sentAt !== undefined && !lost) {
        // As TCP restarts its timer on each ack: while acks keep coming, nothing is probed.
        const timeout = rto(entry)
        if (now - ps.lastProbeAt < timeout || now - ps.lastAckAt < timeout) {
          ps.stream.markSent(entry, now)
          handled++
          continue
        }
        ps.lastProbeAt = now
      }
      // A copy known lost cannot be the one an ack answers.
      if (lost) entry.copies = 0
      if (!sendEntry(ps, entry, now)) break
      handled++
      if (entry.sends > 1) retransmitted++
      if (entry.sends > 2) ps.backedOff = true
    }
    ps.blocked = handled < due.length || due.length === config.retransmitBurst
    if (retransmitted > 0) observer.retransmitted?.(ps.peer, retransmitted)
  }

  const release = (handle: Handle): void => {
    handle.live--
    entries--
    if (handle.live === 0) {
      messages--
      bytes -= handle.bytes
    }
  }

  const ackedAmong = (handle: Handle, among: ReadonlySet<PeerId> | undefined) =>
    among === undefined ? handle.acked : handle.acked.filter((p) => among.has(p))

  const settleWaiters = (handle: Handle): void => {
    for (const waiter of handle.waiters) {
      const acked = ackedAmong(handle, waiter.among)
      if (acked.length >= waiter.quorum) {
        handle.waiters.delete(waiter)
        waiter.resume(Effect.succeed(acked))
      } else if (handle.cancelled) {
        handle.waiters.delete(waiter)
        waiter.resume(
          Effect.fail(
            new AcksUnreachable({ wanted: waiter.quorum, acked: acked.length, reason: "cancelled" })
          )
        )
      }
    }
  }

  const cancel = (handle: Handle): void => {
    if (handle.cancelled) return
    handle.cancelled = true
    for (const [peer, entry] of handle.entries) {
      const ps = streams.get(peer)!
      // A receiver holding later messages learns the new floor from the next copy it gets: the
      // stream makes its lowest held message due again (UnackedStream.cancel).
      if (ps.stream.cancel(entry)) release(handle)
    }
    settleWaiters(handle)
    wake(core.now())
  }

  const handleOf = (handle: Handle, recipients: ReadonlyArray<PeerId>): Reliable => ({
    recipients,
    acked: Effect.sync(() => [...handle.acked]),
    awaitAcks: (quorum, among) =>
      Effect.suspend(() => {
        const amongSet = among === undefined ? undefined : new Set(among)
        const acked = ackedAmong(handle, amongSet)
        if (acked.length >= quorum) return Effect.succeed(acked)
        if (handle.cancelled) {
          return Effect.fail(
            new AcksUnreachable({ wanted: quorum, acked: acked.length, reason: "cancelled" })
          )
        }
        const possible =
          amongSet === undefined ? recipients.length : recipients.filter((p) => amongSet.has(p)).length
        if (possible < quorum) {
          return Effect.fail(
            new AcksUnreachable({ wanted: quorum, acked: acked.length, reason: "too-few-recipients" })
          )
        }
        return Effect.async<ReadonlyArray<PeerId>, AcksUnreachable>((resume) => {
          const waiter: Waiter = { quorum, among: amongSet, resume }
          handle.waiters.add(waiter)
          return Effect.sync(() => {
            handle.waiters.delete(waiter)
          })
        })
      }),
    cancel: Effect.sync(() => cancel(handle))
  })

  const admit: ReliableSender["admit"] = (targets, inner, channel, tag, scope) =>
    Effect.suspend(() => {
      if (messages + 1 > config.maxUnackedMessages) {
        return Effect.fail(
          new ReliableBufferFull({ scope: "node", limit: "messages", max: config.maxUnackedMessages })
        )
      }
      if (bytes + inner.length > config.maxUnackedBytes) {
        return Effect.fail(
          new ReliableBufferFull({ scope: "node", limit: "bytes", max: config.maxUnackedBytes })
        )
      }
      const handle: Handle = {
        channel,
        tag,
        bytes: inner.length,
        entries: new Map(),
        acked: [],
        live: 0,
        cancelled: false,
        waiters: new Set()
      }
      const queued: Array<PeerId> = []
      const failed: Array<{ readonly peer: PeerId; readonly error: ReliableBufferFull }> = []
      const now = core.now()
      for (const peer of targets) {
        // Once per peer, however often a caller names it: one entry, one delivery, one ack.
        if (peer === core.self || handle.entries.has(peer)) continue
        const ps = streamOf(peer)
        const full =
          ps.stream.count + 1 > config.maxUnackedPerPeer
            ? ("messages" as const)
            : ps.stream.bytes + inner.length > config.maxUnackedBytesPerPeer
              ? ("bytes" as const)
              : undefined
        if (full !== undefined) {
          const max = full === "messages" ? config.maxUnackedPerPeer : config.maxUnackedBytesPerPeer
          failed.push({ peer, error: new ReliableBufferFull({ scope: "peer", peer, limit: full, max }) })
          continue
        }
        const entry = ps.stream.push(inner, handle)
        handle.entries.set(peer, entry)
        handle.live++
        entries++
        queued.push(peer)
        // In order behind anything still waiting for this peer; else straight to its queue.
        if (ps.blocked || !sendEntry(ps, entry, now)) ps.blocked = true
      }
      if (handle.live > 0) {
        messages++
        bytes += handle.bytes
        wake(now + minRto)
      }
      const reliable = handleOf(handle, queued)
      const bound =
        scope === undefined || handle.live === 0
          ? Effect.void
          : Scope.addFinalizer(
              scope,
              Effect.sync(() => cancel(handle))
            )
      return Effect.as(bound, { reliable, queued, failed })
    })

  const refuse = (peer: PeerId, reason: "future" | "malformed" | "unknown-stream", detail: string) => {
    observer.ackRefused?.(peer, reason)
    core.fork(
      Effect.asVoid(
        core.registry.report(
          peer,
          reason === "malformed" ? "InvalidMessage" : "ProtocolViolation",
          `ack: ${detail}`
        )
      )
    )
  }

  const onAck: ReliableSender["onAck"] = (peer, ack) => {
    if (ack.incarnation !== incarnation) {
      // For an earlier run of this node: nothing of it is held any more.
      observer.ackRefused?.(peer, "stale")
      return
    }
    const ps = streams.get(peer)
    if (ps === undefined) {
      refuse(peer, "unknown-stream", "no reliable message was sent to this peer")
      return
    }
    const result = ps.stream.onAck(ack.cumulative, ack.ranges)
    if ("_tag" in result) {
      refuse(peer, result._tag, result.detail)
      return
    }
    ps.lastAckAt = core.now()
    let heard = ack.cumulative
    for (const range of ack.ranges) if (range.last > heard) heard = range.last
    if (heard > ps.highestHeard) ps.highestHeard = heard
    if (ps.backedOff) {
      ps.backedOff = false
      if (ps.stream.count > 0) {
        ps.stream.expedite()
        ps.blocked = true
        wake(core.now())
      }
    }
    if (result.acked.length === 0) return
    const now = core.now()
    let oldest = now
    // The round trip is sampled on the newest message acknowledged, if it was sent once: older ones
    // may have waited behind a gap (their ack is late, not their trip), and a retransmitted one's
    // ack may answer either copy (Karn).
    const newest = result.acked[result.acked.length - 1]!
    if (newest.sentAt !== undefined && newest.sends === 1) {
      const sample = now - newest.sentAt
      ps.srtt = ps.srtt === undefined ? sample : (7 * ps.srtt + sample) / 8
    }
    for (const entry of result.acked) {
      // Only an entry sent once says which copy arrived (Karn): an ack of a resent one may answer
      // the first copy, and would make everything sent between the two look lost.
      if (entry.copies === 1 && entry.order > ps.heardOrder) ps.heardOrder = entry.order
      const handle = entry.handle
      if (entry.sentAt !== undefined && entry.sentAt < oldest) oldest = entry.sentAt
      handle.acked.push(peer)
      release(handle)
      if (handle.waiters.size > 0) settleWaiters(handle)
    }
    observer.acked?.(peer, result.acked.length, now - oldest)
  }

  const onConnected: ReliableSender["onConnected"] = (peer) => {
    const ps = streams.get(peer)
    if (ps === undefined || ps.stream.count === 0) return
    ps.stream.resendAll()
    ps.blocked = true
    wake(core.now())
  }

  const tick: ReliableSender["tick"] = (now) => {
    let next: number | undefined
    for (const ps of streams.values()) {
      if (ps.stream.count === 0) {
        ps.blocked = false
        continue
      }
      pump(ps, now)
      const due = ps.blocked ? now + retry : ps.stream.nextDue(rtoOf(ps))
      if (due !== undefined && (next === undefined || due < next)) next = due
    }
    return next
  }

  const forgetOthers: ReliableSender["forgetOthers"] = (keep) => {
    for (const ps of streams.values()) {
      if (keep.has(ps.peer) || ps.stream.count === 0) continue
      for (const entry of [...ps.stream.live()]) {
        if (ps.stream.cancel(entry)) release(entry.handle)
      }
    }
  }

  const resendAll = (): void => {
    for (const ps of streams.values()) {
      if (ps.stream.count === 0) continue
      ps.stream.resendAll()
      ps.blocked = true
    }
    wake(core.now())
  }

  return {
    admit,
    onAck,
    onConnected,
    forgetOthers,
    resendAll,
    tick,
    buffer: () => ({ messages, bytes, entries })
  }
}
