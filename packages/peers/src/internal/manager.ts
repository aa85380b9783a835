// PeerManager's machinery. One slot per known peer holds its connection (at most one), its
// heartbeat state and its inbound token buckets. Slots are plain objects changed in synchronous
// steps (no yield between a read and its write), so each change is atomic on the event loop.
import { Transport, TransportConfig, TransportError } from "@hotstuff2/transport"
import { Codec, Message } from "@hotstuff2/wire"
import * as Clock from "effect/Clock"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as FiberId from "effect/FiberId"
import * as FiberMap from "effect/FiberMap"
import * as FiberSet from "effect/FiberSet"
import * as Option from "effect/Option"
import * as Queue from "effect/Queue"
import * as Schedule from "effect/Schedule"
import type * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import {
  type InboundFrame,
  type PeerId,
  type PeerManagerOptions,
  type PeerManagerShape,
  PeerNotConnected
} from "../PeerManager.js"
import { PeerRegistry } from "../PeerRegistry.js"
import * as PeersConfig from "../PeersConfig.js"

const HEARTBEAT = TransportConfig.Channel.heartbeat

/** A token bucket refilled continuously from Clock millis. */
class Bucket {
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

  take(n: number, now: number): boolean {
    this.tokens = Math.min(this.capacity, this.tokens + ((now - this.at) / 1000) * this.rate)
    this.at = now
    if (this.tokens < n) return false
    this.tokens -= n
    return true
  }
}

interface Slot {
  connection: Transport.Connection | undefined
  connectedAt: number
  /** Completed (and replaced) whenever `connection` changes. */
  changed: Deferred.Deferred<void>
  pingNonce: bigint
  /** Pings not yet answered: nonce to Clock millis sent (at most `missedHeartbeats` kept). */
  pings: Map<bigint, number>
  /** Heartbeat ticks in a row with a ping unanswered. */
  missed: number
  buckets: Map<number, { messages: Bucket; bytes: Bucket }>
  lastRateReport: number
  dropped: number
}

/** Which of two connections between the same peers both sides keep: the one the smaller PeerId dialled. */
export const preferred = (local: PeerId, connection: Transport.Connection): boolean => {
  const dialer = connection.direction === "outbound" ? local : connection.remotePeer
  return dialer === (local < connection.remotePeer ? local : connection.remotePeer)
}

const encode = (message: Message.Message) => Either.getOrThrow(Codec.encode(message))

export const make = (options: PeerManagerOptions) =>
  Effect.gen(function* () {
    const config = yield* PeersConfig.decode(options.config ?? {})
    const transport = yield* Transport.Transport
    const registry = yield* PeerRegistry
    const clock = yield* Effect.clock
    const local = options.identity.peerId
    const validators = new Set(options.validators.map((v) => v.id).filter((id) => id !== local))
    const slots = new Map<PeerId, Slot>()
    const inbound = yield* Effect.acquireRelease(Queue.bounded<InboundFrame>(4096), Queue.shutdown)
    const perConnection = yield* FiberSet.make<void, never>()
    const dialers = yield* FiberMap.make<PeerId, void, never>()
    const limits = new Map(config.rateLimits.map((l) => [l.channel, l]))
    const heartbeatMillis = Duration.toMillis(config.heartbeatInterval)
    const reportEvery = Duration.toMillis(config.rateLimitReportInterval)
    const stableMillis = Duration.toMillis(config.stableAfter)

    const slotOf = (peer: PeerId): Slot => {
      let slot = slots.get(peer)
      if (slot === undefined) {
        slot = {
          connection: undefined,
          connectedAt: 0,
          changed: Deferred.unsafeMake<void>(FiberId.none),
          pingNonce: 0n,
          pings: new Map(),
          missed: 0,
          buckets: new Map(),
          lastRateReport: Number.NEGATIVE_INFINITY,
          dropped: 0
        }
        slots.set(peer, slot)
      }
      return slot
    }

    const setConnection = (slot: Slot, connection: Transport.Connection | undefined) => {
      slot.connection = connection
      slot.connectedAt = clock.unsafeCurrentTimeMillis()
      slot.missed = 0
      slot.pings = new Map()
      slot.buckets = new Map()
      const changed = slot.changed
      slot.changed = Deferred.unsafeMake<void>(FiberId.none)
      Deferred.unsafeDone(changed, Effect.void)
    }

    yield* registry.setValidators([...validators])
    for (const v of options.validators) {
      if (v.id === local) continue
      for (const address of v.addresses) yield* registry.addAddress(v.id, address, "config")
    }

    const admitted = (peer: PeerId) =>
      Effect.map(
        registry.isBanned(peer),
        (banned) => !banned && (validators.has(peer) || config.admitNonValidators)
      )

    /** Inbound rate limit: false when the frame is over the peer's budget on its channel. */
    const withinLimits = (slot: Slot, frame: Transport.InboundFrame, now: number): boolean => {
      const limit = limits.get(frame.channel)
      if (limit === undefined) return true
      let buckets = slot.buckets.get(frame.channel)
      if (buckets === undefined) {
        buckets = {
          messages: new Bucket(limit.messagesPerSecond, limit.messagesPerSecond * limit.burstSeconds, now),
          bytes: new Bucket(limit.bytesPerSecond, limit.bytesPerSecond * limit.burstSeconds, now)
        }
        slot.buckets.set(frame.channel, buckets)
      }
      let bytes = 0
      for (const m of frame.messages) bytes += m.length
      // Both buckets are charged, or neither.
      if (!buckets.messages.take(frame.messages.length, now)) return false
      if (!buckets.bytes.take(bytes, now)) {
        buckets.messages.tokens += frame.messages.length
        return false
      }
      return true
    }

    const onHeartbeat = (
      peer: PeerId,
      slot: Slot,
      connection: Transport.Connection,
      frame: Transport.InboundFrame
    ) =>
      Effect.gen(function* () {
        for (const bytes of frame.messages) {
          const decoded = Codec.decode(bytes)
          if (Either.isLeft(decoded)) {
            yield* registry.report(peer, "InvalidMessage")
            continue
          }
          const message = decoded.right
          if (message._tag === "Ping") {
            connection.unsafeSend(HEARTBEAT, [encode(Message.Pong.make({ nonce: message.nonce }))])
          } else if (message._tag === "Pong") {
            // A late pong still measures its own ping, and answers every ping sent before it.
            const sentAt = slot.pings.get(message.nonce)
            if (sentAt !== undefined) {
              slot.pings.clear()
              slot.missed = 0
              yield* registry.recordRtt(peer, clock.unsafeCurrentTimeMillis() - sentAt)
            }
          } else {
            yield* registry.report(peer, "ProtocolViolation")
          }
        }
      })

    /** Takes frames from one connection while it is the peer's connection; ends when it closes. */
    const read = (peer: PeerId, slot: Slot, connection: Transport.Connection) =>
      Effect.gen(function* () {
        for (;;) {
          const taken = yield* Effect.either(connection.receive)
          if (Either.isLeft(taken)) return
          const now = clock.unsafeCurrentTimeMillis()
          yield* registry.touch(peer)
          for (const frame of taken.right) {
            if (!withinLimits(slot, frame, now)) {
              slot.dropped++
              if (now - slot.lastRateReport >= reportEvery) {
                slot.lastRateReport = now
                yield* registry.report(peer, "RateLimitExceeded")
              }
              continue
            }
            if (frame.channel === HEARTBEAT) yield* onHeartbeat(peer, slot, connection, frame)
            else yield* Queue.offer(inbound, { peer, channel: frame.channel, messages: frame.messages })
          }
        }
      })

    /** Makes `connection` the peer's one connection, or closes it as a duplicate. */
    const register = (connection: Transport.Connection): Effect.Effect<void> =>
      Effect.gen(function* () {
        const peer = connection.remotePeer
        if (!(yield* admitted(peer))) {
          yield* Effect.forkDaemon(
            connection.close({ reason: "not-admitted", detail: "banned or not a validator" })
          )
          return
        }
        const slot = slotOf(peer)
        const existing = slot.connection
        if (existing !== undefined) {
          // Both sides keep the connection the smaller PeerId dialled; between two of the same kind, the newer.
          const keepNew = preferred(local, connection) || !preferred(local, existing)
          const loser = keepNew ? existing : connection
          yield* Effect.forkDaemon(
            loser.close({ reason: "duplicate", detail: "another connection to this peer is kept" })
          )
          if (!keepNew) return
        }
        setConnection(slot, connection)
        yield* registry.setConnection(peer, "connected", {
          address: connection.remoteAddress,
          direction: connection.direction
        })
        yield* FiberSet.run(
          perConnection,
          Effect.gen(function* () {
            yield* Effect.fork(read(peer, slot, connection))
            const why = yield* connection.closed
            if (slot.connection === connection) {
              setConnection(slot, undefined)
              yield* registry.setConnection(peer, "disconnected", {
                reason: `${why.initiator}: ${why.reason}`
              })
            }
          }).pipe(Effect.scoped)
        )
      })

    /** Keeps one validator connected: dial when there is no connection, back off on failure. */
    const keepConnected = (peer: PeerId) =>
      Effect.gen(function* () {
        const schedule = Schedule.exponential(config.redialBase, config.redialFactor).pipe(
          Schedule.jittered,
          Schedule.either(Schedule.spaced(config.redialCap))
        )
        const backoff = yield* Schedule.driver(schedule)
        const slot = slotOf(peer)
        for (;;) {
          while (slot.connection !== undefined) {
            const connectedAt = slot.connectedAt
            yield* Deferred.await(slot.changed)
            // The connection ended: if it had been stable, start the schedule over.
            if (
              slot.connection === undefined &&
              clock.unsafeCurrentTimeMillis() - connectedAt >= stableMillis
            ) {
              yield* backoff.reset
            }
          }
          if (yield* registry.isBanned(peer)) {
            yield* Effect.orElse(backoff.next(undefined), () => Effect.void)
            continue
          }
          const addresses = yield* registry.dialOrder(peer)
          let connected = false
          for (const address of addresses) {
            if (slot.connection !== undefined) break
            yield* registry.setConnection(peer, "connecting", { address })
            // A defect in one attempt (a bug) is logged and counted as a failed dial: it must not
            // end this peer's redial loop for good.
            const dialed = yield* Effect.either(
              transport.dial(address, peer).pipe(
                Effect.catchAllDefect((defect) =>
                  Effect.zipRight(
                    Effect.logError("dial failed with a defect", defect),
                    Effect.fail(
                      new TransportError.DialError({
                        address,
                        expectedPeer: peer,
                        reason: "closed",
                        detail: `defect: ${String(defect)}`
                      })
                    )
                  )
                )
              )
            )
            yield* registry.recordDial(peer, address, Either.isRight(dialed))
            if (Either.isRight(dialed)) {
              yield* register(dialed.right)
              connected = true
              break
            }
            if (dialed.left.reason === "identity-mismatch" || dialed.left.reason === "bad-signature") {
              yield* registry.report(peer, "ProtocolViolation")
            }
          }
          if (!connected && slot.connection === undefined) {
            yield* registry.setConnection(peer, "disconnected", { reason: "dial failed" })
            yield* Effect.orElse(backoff.next(undefined), () => Effect.void)
          }
        }
      })

    // Listen, admitting validators (and non-validators if configured) that are not banned.
    const listener = yield* transport.listen(options.listen, { authorize: (peer) => admitted(peer) })
    yield* listener.connections.pipe(
      Stream.runForEach((connection) => register(connection)),
      Effect.forkScoped
    )

    // A ban closes the banned peer's connection.
    yield* registry.changes.pipe(
      Stream.runForEach((event) =>
        event._tag === "Banned"
          ? Effect.suspend(() => {
              const connection = slots.get(event.peer)?.connection
              return connection === undefined
                ? Effect.void
                : Effect.asVoid(
                    Effect.forkDaemon(connection.close({ reason: "banned", detail: event.reason }))
                  )
            })
          : Effect.void
      ),
      Effect.forkScoped
    )

    // One ticker for every connection's heartbeat: one Clock sleep per node, not per connection.
    yield* Effect.gen(function* () {
      const now = yield* Clock.currentTimeMillis
      for (const [peer, slot] of slots) {
        const connection = slot.connection
        if (connection === undefined) continue
        if (slot.pings.size > 0 && ++slot.missed >= config.missedHeartbeats) {
          yield* registry.report(peer, "Timeout")
          yield* Effect.forkDaemon(
            connection.close({ reason: "unhealthy", detail: `${slot.missed} heartbeats without a pong` })
          )
          continue
        }
        slot.pingNonce++
        slot.pings.set(slot.pingNonce, now)
        if (slot.pings.size > config.missedHeartbeats) slot.pings.delete(slot.pings.keys().next().value!)
        connection.unsafeSend(HEARTBEAT, [encode(Message.Ping.make({ nonce: slot.pingNonce }))])
      }
    }).pipe(Effect.repeat(Schedule.spaced(Duration.millis(heartbeatMillis))), Effect.forkScoped)

    for (const peer of validators) yield* FiberMap.run(dialers, peer, keepConnected(peer))

    return {
      localPeer: local,
      address: listener.address,
      send: (peer, channel, messages, sendOptions) =>
        Effect.gen(function* () {
          const slot = slots.get(peer)
          let connection = slot?.connection
          if (connection === undefined && sendOptions?.waitForConnection !== undefined) {
            const target = slotOf(peer)
            connection = yield* Effect.gen(function* () {
              while (target.connection === undefined) yield* Deferred.await(target.changed)
              return target.connection
            }).pipe(
              Effect.timeoutFail({
                duration: sendOptions.waitForConnection,
                onTimeout: () => new PeerNotConnected({ peer, detail: "no connection within the wait" })
              })
            )
          }
          if (connection === undefined) {
            return yield* new PeerNotConnected({
              peer,
              detail: "not connected (pass waitForConnection to wait)"
            })
          }
          let error = connection.unsafeSend(channel, messages)
          // The connection lost a duplicate tie-break since: send on the one that won.
          const current = slots.get(peer)?.connection
          if (error?._tag === "ConnectionClosed" && current !== undefined && current !== connection) {
            error = current.unsafeSend(channel, messages)
          }
          if (error !== undefined) return yield* Effect.fail(error)
        }),
      inbound: Stream.fromQueue(inbound),
      connected: Effect.sync(() =>
        [...slots].filter(([, s]) => s.connection !== undefined).map(([peer]) => peer)
      ),
      connection: (peer) => Effect.sync(() => Option.fromNullable(slots.get(peer)?.connection)),
      events: registry.changes
    } satisfies PeerManagerShape
  }) as Effect.Effect<
    PeerManagerShape,
    PeersConfig.InvalidPeersConfig | TransportError.ListenError,
    Scope.Scope | Transport.Transport | PeerRegistry
  >
