// Heartbeats: pings and pongs on the heartbeat channel, RTT samples, and the one ticker per node
// that pings every connection and takes an unhealthy one out of service. Pings are answered, pongs
// taken and acks handed over synchronously, so a heartbeat costs no fiber step.
//
// Slow is not dead: a peer whose application stops reading stops answering pings (its reader
// waits, its socket pauses), but its own ticker keeps pinging this node. Anything heard from the
// peer (its pings included) shows it alive; a miss is a tick with an old ping unanswered and
// nothing heard since the tick before. Only pongs measure RTT.
import { type Transport, TransportConfig } from "@hotstuff2/transport"
import { Codec, type Message } from "@hotstuff2/wire"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import type { PeerId } from "../PeerManager.js"
import type { PeerRegistryShape } from "../PeerRegistry.js"
import type * as PeersConfig from "../PeersConfig.js"
import * as SharedSleep from "../SharedSleep.js"
import type { Slot } from "./slot.js"

export const HEARTBEAT = TransportConfig.Channel.heartbeat

const encode = (message: Message.Message) => Either.getOrThrow(Codec.encode(message))

export interface Heartbeat {
  /**
   * Answers pings, takes pongs and hands acks to `onAck` synchronously (a heartbeat costs no fiber
   * step); returns what is left for the registry (or the log), if anything.
   */
  readonly onHeartbeat: (
    peer: PeerId,
    slot: Slot,
    connection: Transport.Connection,
    frame: Transport.InboundFrame
  ) => Effect.Effect<unknown> | undefined
  /** The one ticker for every connection's heartbeat (runs until interrupted). */
  readonly ticker: Effect.Effect<unknown>
}

export const makeHeartbeat = (deps: {
  readonly config: PeersConfig.PeersConfig
  readonly registry: PeerRegistryShape
  readonly now: () => number
  readonly slots: ReadonlyMap<PeerId, Slot>
  /** Reliable delivery's acks from a connected peer (`PeerManagerOptions.onAck`); none: ignored. */
  readonly onAck: () => ((peer: PeerId, ack: Message.Ack) => void) | undefined
  /** Takes an unhealthy connection out of its slot and closes it. */
  readonly detach: (
    peer: PeerId,
    slot: Slot,
    connection: Transport.Connection,
    reason: string,
    detail: string
  ) => Effect.Effect<void>
}): Heartbeat => {
  const { config, registry, now, slots, onAck, detach } = deps
  const heartbeatMillis = Duration.toMillis(config.heartbeatInterval)

  /** A ping to the peer, as a message (sent by the caller), remembered for its pong. */
  const nextPing = (slot: Slot, at: number): Uint8Array => {
    slot.pingNonce++
    slot.pings.set(slot.pingNonce, at)
    if (slot.pings.size > config.missedHeartbeats) slot.pings.delete(slot.pings.keys().next().value!)
    slot.lastPingAt = at
    return encode({ _tag: "Ping", nonce: slot.pingNonce })
  }

  const onHeartbeat = (
    peer: PeerId,
    slot: Slot,
    connection: Transport.Connection,
    frame: Transport.InboundFrame
  ): Effect.Effect<unknown> | undefined => {
    let after: Effect.Effect<unknown> | undefined
    const then = (effect: Effect.Effect<unknown>) => {
      after = after === undefined ? effect : Effect.zipRight(after, effect)
    }
    for (const bytes of frame.messages) {
      const decoded = Codec.decode(bytes)
      if (Either.isLeft(decoded)) {
        then(registry.report(peer, "InvalidMessage"))
        continue
      }
      const message = decoded.right
      if (message._tag === "Ping") {
        const pong = encode({ _tag: "Pong", nonce: message.nonce })
        // This node's own ping to the peer rides along with the pong when it is half due: one
        // frame and one write where there would be two, and this node's ticker then skips the peer.
        const at = now()
        connection.unsafeSend(
          HEARTBEAT,
          at - slot.lastPingAt >= heartbeatMillis / 2 ? [pong, nextPing(slot, at)] : [pong]
        )
      } else if (message._tag === "Pong") {
        // A late pong still measures its own ping, and answers every ping sent before it. (The
        // reader has marked the peer heard: that resets `missed` at the next tick.)
        const sentAt = slot.pings.get(message.nonce)
        if (sentAt !== undefined) {
          slot.pings.clear()
          then(registry.recordRtt(peer, now() - sentAt))
        }
      } else if (message._tag === "Ack") {
        // Reliable delivery's. Without a consumer it is ignored, not reported: a peer may run
        // reliable delivery while this node does not.
        const handler = onAck()
        if (handler !== undefined) {
          try {
            handler(peer, message)
          } catch (cause) {
            // A bug in the consumer must not end this connection's reader.
            then(Effect.logError("PeerManager onAck threw: the Ack is dropped", cause))
          }
        }
      } else {
        then(registry.report(peer, "ProtocolViolation"))
      }
    }
    return after
  }

  // One ticker for every connection's heartbeat: one Clock sleep per node, not per connection.
  const ticker = Effect.gen(function* () {
    const at = now()
    for (const [peer, slot] of slots) {
      const connection = slot.connection
      if (connection === undefined) continue
      // Anything heard from the peer since the last tick, its own pings included, shows it alive:
      // a peer whose reader waits on its consumer cannot answer pings, yet is only slow.
      const heard = slot.heard
      slot.heard = false
      // Otherwise a ping counts as missed once it is half an interval old (one sent with a pong may
      // be younger than a tick). Silence while this node's own consumer holds the reader back is
      // not the peer's fault.
      const oldest = slot.pings.values().next().value
      if (heard) slot.missed = 0
      else if (
        oldest !== undefined &&
        at - oldest >= heartbeatMillis / 2 &&
        !slot.readerBlocked &&
        ++slot.missed >= config.missedHeartbeats
      ) {
        yield* registry.report(peer, "Timeout")
        yield* detach(
          peer,
          slot,
          connection,
          "unhealthy",
          `${slot.missed} heartbeats unanswered, nothing heard from the peer`
        )
        continue
      }
      // A ping went out within the interval (with a pong), or the connection is that new.
      if (at - slot.lastPingAt < heartbeatMillis) continue
      connection.unsafeSend(HEARTBEAT, [nextPing(slot, at)])
    }
  }).pipe(
    // As `Effect.repeat(Schedule.spaced(interval))`: the next tick an interval after this one ends.
    Effect.zipRight(Effect.clockWith((clock) => SharedSleep.after(clock, heartbeatMillis))),
    Effect.forever,
    Effect.interruptible
  )

  return { onHeartbeat, ticker }
}
