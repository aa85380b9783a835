// Heartbeats: pings and pongs on the heartbeat channel, RTT samples, and the one ticker per node
// that pings every connection and takes an unhealthy one out of service. Pings are answered and
// pongs taken synchronously, so a heartbeat costs no fiber step.
import { type Transport, TransportConfig } from "@hotstuff2/transport"
import { Codec, type Message } from "@hotstuff2/wire"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Schedule from "effect/Schedule"
import type { PeerId } from "../PeerManager.js"
import type { PeerRegistryShape } from "../PeerRegistry.js"
import type * as PeersConfig from "../PeersConfig.js"
import type { Slot } from "./slot.js"

export const HEARTBEAT = TransportConfig.Channel.heartbeat

const encode = (message: Message.Message) => Either.getOrThrow(Codec.encode(message))

export interface Heartbeat {
  /**
   * Answers pings and takes pongs synchronously (a heartbeat costs no fiber step); returns what is
   * left for the registry, if anything.
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
  /** Takes an unhealthy connection out of its slot and closes it. */
  readonly detach: (
    peer: PeerId,
    slot: Slot,
    connection: Transport.Connection,
    reason: string,
    detail: string
  ) => Effect.Effect<void>
}): Heartbeat => {
  const { config, registry, now, slots, detach } = deps
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
        // A late pong still measures its own ping, and answers every ping sent before it.
        const sentAt = slot.pings.get(message.nonce)
        if (sentAt !== undefined) {
          slot.pings.clear()
          slot.missed = 0
          then(registry.recordRtt(peer, now() - sentAt))
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
      // A ping counts as missed once it is half an interval old (one sent with a pong may be
      // younger than a tick). Silence while this node's own consumer holds the reader back is not
      // the peer's fault.
      const oldest = slot.pings.values().next().value
      if (
        oldest !== undefined &&
        at - oldest >= heartbeatMillis / 2 &&
        !slot.readerBlocked &&
        ++slot.missed >= config.missedHeartbeats
      ) {
        yield* registry.report(peer, "Timeout")
        yield* detach(peer, slot, connection, "unhealthy", `${slot.missed} heartbeats without a pong`)
        continue
      }
      // A ping went out within the interval (with a pong), or the connection is that new.
      if (at - slot.lastPingAt < heartbeatMillis) continue
      connection.unsafeSend(HEARTBEAT, [nextPing(slot, at)])
    }
  }).pipe(Effect.repeat(Schedule.spaced(Duration.millis(heartbeatMillis))), Effect.interruptible)

  return { onHeartbeat, ticker }
}
