// Reading: one reader fiber per connection (it also notices the close), and the data-callback fast
// path that takes frames to the inbox without an Effect while the reader idles. Frames the fast path
// cannot take go to the reader, and the frames after them wait behind it, so the order never changes.
import type { Transport } from "@hotstuff2/transport"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Fiber from "effect/Fiber"
import type { PeerId } from "../PeerManager.js"
import type { PeerRegistryShape } from "../PeerRegistry.js"
import type * as PeersConfig from "../PeersConfig.js"
import { HEARTBEAT, type Heartbeat } from "./heartbeat.js"
import type { FairInbox } from "./inbox.js"
import type { RateLimiter } from "./rateLimit.js"
import type { Slot } from "./slot.js"

export interface Reader {
  /**
   * Takes frames from one connection while it is the peer's connection, and notices its close: it
   * ends once the connection is closed and drained, or replaced or detached (whoever did that took
   * care of the slot).
   */
  readonly read: (peer: PeerId, slot: Slot, connection: Transport.Connection) => Effect.Effect<void>
  /**
   * The reader's work for one frame, done in the connection's data callback when it needs no
   * Effect: the peer is not due a registry touch, the frame is within its rate limits and not a
   * heartbeat, and the inbox has room. Anything else (false) goes to the reader fiber, in order.
   */
  readonly receiverFor: (
    peer: PeerId,
    slot: Slot,
    connection: Transport.Connection
  ) => (frame: Transport.InboundFrame) => boolean
}

export const makeReader = (deps: {
  readonly config: PeersConfig.PeersConfig
  readonly registry: PeerRegistryShape
  readonly now: () => number
  readonly inbox: FairInbox
  /** The separate channels' inboxes (drop when full) and their drop counts. */
  readonly separate: ReadonlyMap<number, FairInbox>
  readonly separateDropped: Map<number, number>
  /** Messages of one channel picked by `select` for their own inbox (drop when full). */
  readonly divert:
    | {
        readonly channel: number
        readonly select: (message: Uint8Array) => boolean
        readonly inbox: FairInbox
      }
    | undefined
  readonly limiter: RateLimiter
  readonly heartbeat: Heartbeat
  /** The peer's connection closed: the manager takes it out of its slot. */
  readonly onClosed: (
    peer: PeerId,
    slot: Slot,
    connection: Transport.Connection,
    why: Transport.CloseReason
  ) => Effect.Effect<void>
}): Reader => {
  const { registry, now, inbox, separate, separateDropped, onClosed } = deps
  const { admittedCount, countDropped, withinLimits } = deps.limiter
  const { onHeartbeat } = deps.heartbeat
  const heartbeatMillis = Duration.toMillis(deps.config.heartbeatInterval)
  const divert = deps.divert
  const divertChannel = divert === undefined ? -1 : divert.channel

  /**
   * Takes the messages `divert` picks out of a frame of its channel to their inbox (a full inbox drops
   * them, counted); returns the rest, in order (the same array when nothing was picked).
   */
  const splitOff = (
    peer: PeerId,
    channel: number,
    messages: ReadonlyArray<Uint8Array>
  ): ReadonlyArray<Uint8Array> => {
    let picked: Array<Uint8Array> | undefined
    let rest: Array<Uint8Array> | undefined
    for (let i = 0; i < messages.length; i++) {
      const message = messages[i]!
      if (divert!.select(message)) {
        if (picked === undefined) {
          picked = []
          rest = messages.slice(0, i)
        }
        picked.push(message)
      } else if (rest !== undefined) rest.push(message)
    }
    if (picked === undefined) return messages
    if (!divert!.inbox.tryOffer({ peer, channel, messages: picked })) {
      separateDropped.set(channel, (separateDropped.get(channel) ?? 0) + 1)
    }
    return rest!
  }

  /**
   * Where a frame within its limits goes, by channel: the one place that decides it, for the fast
   * path and the reader alike. Undefined: the reader handles it itself (heartbeats); otherwise the
   * inbox whose consumer takes it (`inbound`, or a separate channel's `inboundOn`).
   */
  const inboxFor = (channel: number): FairInbox | undefined =>
    channel === HEARTBEAT ? undefined : separate.size === 0 ? inbox : (separate.get(channel) ?? inbox)

  const read = (peer: PeerId, slot: Slot, connection: Transport.Connection) =>
    Effect.gen(function* () {
      while (slot.connection === connection) {
        const taken = yield* Effect.either(connection.receive)
        if (Either.isLeft(taken)) return yield* onClosed(peer, slot, connection, yield* connection.closed)
        const at = now()
        // Any frame shows the peer alive (to the heartbeat now; the registry hears of it at most
        // once per interval), its pings too: a peer that cannot read may still be writing.
        slot.heard = true
        if (at - slot.touchedAt >= heartbeatMillis) {
          slot.touchedAt = at
          yield* registry.touch(peer)
        }
        for (const whole of taken.right) {
          if (slot.connection !== connection) return // replaced or detached: the rest is dropped
          const within = admittedCount(slot, whole, at)
          const compressedDropped = slot.compressedDropped
          slot.compressedDropped = false
          if (within < whole.messages.length || compressedDropped) {
            if (countDropped(slot, whole.messages.length - within, at)) {
              yield* registry.report(peer, "RateLimitExceeded")
              // The report may have banned and cut the peer: nothing more of it is delivered.
              if (slot.connection !== connection) return
            }
            if (within === 0) continue
          }
          const frame =
            within === whole.messages.length ? whole : { ...whole, messages: whole.messages.slice(0, within) }
          const target = inboxFor(frame.channel)
          if (target === undefined) {
            const after = onHeartbeat(peer, slot, connection, frame)
            if (after !== undefined) yield* after
            continue
          }
          const messages =
            frame.channel === divertChannel ? splitOff(peer, frame.channel, frame.messages) : frame.messages
          if (messages.length === 0) continue
          const inboundFrame = { peer, channel: frame.channel, messages }
          if (target !== inbox && !target.tryOffer(inboundFrame)) {
            // A separate channel drops what its consumer has no room for: it never pauses the socket.
            separateDropped.set(frame.channel, (separateDropped.get(frame.channel) ?? 0) + 1)
            continue
          }
          if (target === inbox && !target.tryOffer(inboundFrame)) {
            // Waiting here is this node's consumer falling behind: it must not count against the
            // peer. A close meanwhile is noticed at once (sends fail typed, redial starts).
            slot.readerBlocked = true
            const watcher = yield* Effect.fork(
              Effect.flatMap(connection.closed, (why) => onClosed(peer, slot, connection, why))
            )
            yield* target.offer(inboundFrame)
            yield* Fiber.interrupt(watcher)
            slot.readerBlocked = false
            // Working through the peer's backlog: this node was behind, not the peer silent.
            slot.heard = true
          }
        }
      }
    })

  const receiverFor =
    (peer: PeerId, slot: Slot, connection: Transport.Connection) =>
    (frame: Transport.InboundFrame): boolean => {
      if (slot.connection !== connection || slot.compressedDropped) return false
      const target = inboxFor(frame.channel)
      if (target === undefined || target.isFull(peer)) return false
      const at = now()
      if (at - slot.touchedAt >= heartbeatMillis || !withinLimits(slot, frame, at)) return false
      const messages =
        frame.channel === divertChannel ? splitOff(peer, frame.channel, frame.messages) : frame.messages
      // Cannot fail: the queue has room, and after shutdown the frame is dropped as `offer` would.
      if (messages.length > 0) target.tryOffer({ peer, channel: frame.channel, messages })
      slot.heard = true
      return true
    }

  return { read, receiverFor }
}
