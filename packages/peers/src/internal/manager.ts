// PeerManager's machinery. One slot per peer holds its connection (at most one), its heartbeat
// state, its redial schedule and its inbound token buckets (kept across reconnects). Slots are plain
// objects changed in synchronous steps (no yield between a read and its write), so each change is
// atomic on the event loop.
//
// Fibers, because a 64-node mesh in one process pays for each: one reader per connection (it also
// notices the close), and one dialer per peer only while the peer is disconnected. A connection that
// arrives while the dialer waits (backoff, grace, a dial permit) ends the dialer; one that arrives
// while it dials lets the dial finish, and the tie-break keeps one of the two.
import { Transport, TransportConfig, TransportError } from "@hotstuff2/transport"
import { Codec, type Frame, type Message } from "@hotstuff2/wire"
import * as Chunk from "effect/Chunk"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Fiber from "effect/Fiber"
import * as FiberId from "effect/FiberId"
import * as FiberMap from "effect/FiberMap"
import * as FiberSet from "effect/FiberSet"
import * as Option from "effect/Option"
import * as Schedule from "effect/Schedule"
import type * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import {
  type PeerId,
  type PeerManagerOptions,
  type PeerManagerShape,
  PeerNotConnected
} from "../PeerManager.js"
import { PeerRegistry } from "../PeerRegistry.js"
import * as PeersConfig from "../PeersConfig.js"
import { FairInbox } from "./inbox.js"

const HEARTBEAT = TransportConfig.Channel.heartbeat
/** Remote hosts remembered per validator for the reserved handshake slots. */
const HOSTS_PER_VALIDATOR = 4

/** A token bucket refilled continuously; times in monotonic milliseconds. */
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

interface Slot {
  connection: Transport.Connection | undefined
  /** Monotonic millis when `connection` was set (or cleared). */
  connectedAt: number
  /** Completed (and replaced) whenever `connection` changes. */
  changed: Deferred.Deferred<void>
  /** Fibers waiting in `send` for this peer's connection. */
  waiting: number
  pingNonce: bigint
  /** Pings not yet answered: nonce to monotonic millis sent (at most `missedHeartbeats` kept). */
  pings: Map<bigint, number>
  /** Heartbeat ticks in a row with a ping unanswered. */
  missed: number
  /** Monotonic millis of the last ping sent (or of the connection, before the first). */
  lastPingAt: number
  /** This node's reader waits on this node's own consumer: silence from the peer is not its fault. */
  readerBlocked: boolean
  /** Per channel, kept across reconnects so that reconnecting does not refill them. */
  buckets: Map<number, { messages: Bucket; bytes: Bucket }>
  lastRateReport: number
  dropped: number
  /** A compressed frame was dropped over the rate limit before inflation: the reader reports it. */
  compressedDropped: boolean
  /** Monotonic millis of the last `registry.touch`: at most one per heartbeat interval. */
  touchedAt: number
  /** What this peer's dialer fiber does now; "none" while there is none (connected, or not a validator). */
  dialer: "none" | "waiting" | "dialing"
  /** The redial schedule, kept across connections (made by the first dialer). */
  backoff: Schedule.ScheduleDriver<unknown, unknown, never> | undefined
}

/** Which of two connections between the same peers both sides keep: the one the smaller PeerId dialled. */
const preferred = (local: PeerId, connection: Transport.Connection): boolean => {
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
    const now = () => Number(clock.unsafeCurrentTimeNanos()) / 1e6
    const local = options.identity.peerId
    const validators = new Set(options.validators.map((v) => v.id).filter((id) => id !== local))
    const slots = new Map<PeerId, Slot>()
    /**
     * Hosts known to belong to validators: those of their configured addresses, and the remote hosts
     * their connections came from (at most `HOSTS_PER_VALIDATOR` each). Their handshakes may use the
     * transport's reserved slots.
     */
    const validatorHosts = new Set<string>()
    const learnedHosts = new Map<PeerId, Set<string>>()
    const hostOf = (address: string) => Transport.parseAddress(address)?.host.replace(/^::ffff:/i, "")
    for (const v of options.validators) {
      for (const address of v.addresses) {
        const host = hostOf(address)
        if (host !== undefined) validatorHosts.add(host)
      }
    }
    const learnHost = (peer: PeerId, address: string) => {
      const host = hostOf(address)
      if (host === undefined || validatorHosts.has(host) || !validators.has(peer)) return
      const learned = learnedHosts.get(peer) ?? new Set<string>()
      if (learned.size >= HOSTS_PER_VALIDATOR) return
      learned.add(host)
      learnedHosts.set(peer, learned)
      validatorHosts.add(host)
    }
    const inbox = new FairInbox(
      config.inboundFramesPerPeer,
      config.inboundBytesPerPeer,
      config.inboundBytesTotal
    )
    yield* Effect.addFinalizer(() => Effect.sync(() => inbox.close()))
    const perConnection = yield* FiberSet.make<void, never>()
    const dialers = yield* FiberMap.make<PeerId, void, never>()
    // Runs before the dialers are interrupted (finalizers run in reverse): no dialer restarts then.
    let closing = false
    yield* Effect.addFinalizer(() => Effect.sync(() => (closing = true)))
    // Limits given for some channels replace those channels' defaults; the others keep theirs.
    const limits = new Map(PeersConfig.defaultRateLimits.map((l) => [l.channel, l]))
    for (const limit of config.rateLimits) limits.set(limit.channel, limit)
    const heartbeatMillis = Duration.toMillis(config.heartbeatInterval)
    const reportEvery = Duration.toMillis(config.rateLimitReportInterval)
    const stableMillis = Duration.toMillis(config.stableAfter)
    const graceMillis = Duration.toMillis(config.dialGrace)
    // Dialers start in PeerId order, so a smaller peer dials its larger peers in that order too,
    // `maxConcurrentDials` at a time: this node's dial comes after those of the validators between
    // the two. The grace given to that peer grows with their number, at most `redialCap`.
    const sortedValidators = [...validators, local].sort()
    const graceFor = (peer: PeerId): number => {
      const before = sortedValidators.indexOf(local) - sortedValidators.indexOf(peer) - 1
      const turns = 1 + Math.floor(Math.max(0, before) / config.maxConcurrentDials)
      return Math.min(graceMillis * turns, Math.max(graceMillis, Duration.toMillis(config.redialCap)))
    }
    const dialPermits = yield* Effect.makeSemaphore(config.maxConcurrentDials)
    const redialSchedule = Schedule.exponential(config.redialBase, config.redialFactor).pipe(
      Schedule.jittered,
      Schedule.either(Schedule.spaced(config.redialCap))
    )

    const slotOf = (peer: PeerId): Slot => {
      let slot = slots.get(peer)
      if (slot === undefined) {
        slot = {
          connection: undefined,
          connectedAt: now(),
          changed: Deferred.unsafeMake<void>(FiberId.none),
          waiting: 0,
          pingNonce: 0n,
          pings: new Map(),
          missed: 0,
          lastPingAt: Number.NEGATIVE_INFINITY,
          readerBlocked: false,
          buckets: new Map(),
          lastRateReport: Number.NEGATIVE_INFINITY,
          dropped: 0,
          compressedDropped: false,
          touchedAt: Number.NEGATIVE_INFINITY,
          dialer: "none",
          backoff: undefined
        }
        slots.set(peer, slot)
      }
      return slot
    }

    /** A non-validator's slot is forgotten once nothing uses it (peers that come and go). */
    const forgetIfIdle = (peer: PeerId, slot: Slot) => {
      if (
        !validators.has(peer) &&
        slot.connection === undefined &&
        slot.waiting === 0 &&
        slots.get(peer) === slot
      ) {
        slots.delete(peer)
        inbox.forget(peer)
      }
    }

    const setConnection = (slot: Slot, connection: Transport.Connection | undefined) => {
      slot.connection = connection
      slot.connectedAt = now()
      slot.missed = 0
      slot.lastPingAt = slot.connectedAt
      slot.pings = new Map()
      slot.readerBlocked = false
      const changed = slot.changed
      slot.changed = Deferred.unsafeMake<void>(FiberId.none)
      Deferred.unsafeDone(changed, Effect.void)
    }

    /**
     * Takes a connection out of its slot now (redial starts, sends fail typed) and closes it in the
     * background: a close in progress is never counted or reported twice.
     */
    const detach = (
      peer: PeerId,
      slot: Slot,
      connection: Transport.Connection,
      reason: string,
      detail: string
    ) =>
      Effect.gen(function* () {
        if (slot.connection === connection) {
          const connectedAt = slot.connectedAt
          setConnection(slot, undefined)
          yield* registry.setConnection(peer, "disconnected", { reason: `local: ${reason}` })
          yield* startDialer(peer, slot, connectedAt)
        }
        yield* Effect.forkDaemon(connection.close({ reason, detail }))
      })

    /** The peer's connection closed: out of its slot, and the dialer starts (after a backoff if it was short). */
    const onClosed = (
      peer: PeerId,
      slot: Slot,
      connection: Transport.Connection,
      why: Transport.CloseReason
    ) =>
      Effect.gen(function* () {
        const violation = why.initiator === "local" && why.reason === "protocol-error"
        if (slot.connection === connection) {
          const connectedAt = slot.connectedAt
          setConnection(slot, undefined)
          yield* registry.setConnection(peer, "disconnected", {
            reason: `${why.initiator}: ${why.reason}${violation ? `: ${why.detail}` : ""}`
          })
          yield* startDialer(peer, slot, connectedAt)
        }
        // Bytes that break the protocol (a huge length prefix, a frame that does not decode, a frame
        // on an unknown channel) cost the peer, as an invalid message does: reconnecting and
        // repeating escalates to a ban.
        if (violation) yield* registry.report(peer, "ProtocolViolation", why.detail)
        forgetIfIdle(peer, slot)
      })

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

    /**
     * Inbound rate limit: whether the whole frame is within the peer's budget on its channel (then
     * charged). A frame that came compressed paid its bytes before it was inflated (`admitCompressed`):
     * only its messages are counted here.
     */
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

    /**
     * How many of the frame's messages, from the first, are within the peer's budget (charged for
     * them). A sender joins the sends of a turn into one frame: the frame is cut where the budget
     * runs out, as the sends would have been one by one, not dropped whole.
     */
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

    /**
     * Before a compressed frame is inflated: it pays what it will cost (its declared inflated size)
     * from the peer's byte budget on its channel, or is dropped uninflated and counted, so a flood of
     * compressed frames is cut before it costs any inflation. The reader reports it.
     */
    const admitCompressedFor =
      (slot: Slot) =>
      (channel: number, bytes: number): boolean => {
        const buckets = bucketsOf(slot, channel, now())
        if (buckets === undefined || buckets.bytes.take(bytes, now())) return true
        slot.dropped++
        slot.compressedDropped = true
        return false
      }

    /** A ping to the peer, as a message (sent by the caller), remembered for its pong. */
    const nextPing = (slot: Slot, at: number): Uint8Array => {
      slot.pingNonce++
      slot.pings.set(slot.pingNonce, at)
      if (slot.pings.size > config.missedHeartbeats) slot.pings.delete(slot.pings.keys().next().value!)
      slot.lastPingAt = at
      return encode({ _tag: "Ping", nonce: slot.pingNonce })
    }

    /**
     * Answers pings and takes pongs synchronously (a heartbeat costs no fiber step); returns what is
     * left for the registry, if anything.
     */
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

    /**
     * Takes frames from one connection while it is the peer's connection, and notices its close: it
     * ends once the connection is closed and drained, or replaced or detached (whoever did that took
     * care of the slot).
     */
    const read = (peer: PeerId, slot: Slot, connection: Transport.Connection) =>
      Effect.gen(function* () {
        while (slot.connection === connection) {
          const taken = yield* Effect.either(connection.receive)
          if (Either.isLeft(taken)) return yield* onClosed(peer, slot, connection, yield* connection.closed)
          const at = now()
          // Any frame shows the peer alive; the registry hears of it at most once per interval.
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
              slot.dropped += whole.messages.length - within
              if (at - slot.lastRateReport >= reportEvery) {
                slot.lastRateReport = at
                yield* registry.report(peer, "RateLimitExceeded")
                // The report may have banned and cut the peer: nothing more of it is delivered.
                if (slot.connection !== connection) return
              }
              if (within === 0) continue
            }
            const frame =
              within === whole.messages.length
                ? whole
                : { ...whole, messages: whole.messages.slice(0, within) }
            if (frame.channel === HEARTBEAT) {
              const after = onHeartbeat(peer, slot, connection, frame)
              if (after !== undefined) yield* after
              continue
            }
            const inboundFrame = { peer, channel: frame.channel, messages: frame.messages }
            if (!inbox.tryOffer(inboundFrame)) {
              // Waiting here is this node's consumer falling behind: it must not count against the
              // peer. A close meanwhile is noticed at once (sends fail typed, redial starts).
              slot.readerBlocked = true
              const watcher = yield* Effect.fork(
                Effect.flatMap(connection.closed, (why) => onClosed(peer, slot, connection, why))
              )
              yield* inbox.offer(inboundFrame)
              yield* Fiber.interrupt(watcher)
              slot.readerBlocked = false
            }
            slot.missed = 0
          }
        }
      })

    /**
     * The reader's work for one frame, done in the connection's data callback when it needs no
     * Effect: the peer is not due a registry touch, the frame is within its rate limits and not a
     * heartbeat, and the inbox has room. Anything else (false) goes to the reader fiber, in order.
     */
    const receiverFor =
      (peer: PeerId, slot: Slot, connection: Transport.Connection) =>
      (frame: Transport.InboundFrame): boolean => {
        if (
          slot.connection !== connection ||
          frame.channel === HEARTBEAT ||
          slot.compressedDropped ||
          inbox.isFull(peer)
        )
          return false
        const at = now()
        if (at - slot.touchedAt >= heartbeatMillis || !withinLimits(slot, frame, at)) return false
        // Cannot fail: the queue has room, and after shutdown the frame is dropped as `offer` would.
        inbox.tryOffer({ peer, channel: frame.channel, messages: frame.messages })
        slot.missed = 0
        return true
      }

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
        learnHost(peer, connection.remoteAddress)
        yield* registry.setConnection(peer, "connected", {
          address: connection.remoteAddress,
          direction: connection.direction
        })
        // A dialer still waiting has nothing left to do; one in the middle of a dial finishes it.
        if (slot.dialer === "waiting") yield* FiberMap.remove(dialers, peer)
        connection.unsafeAdmitCompressed(admitCompressedFor(slot))
        // Long-lived fibers are interruptible even when the manager is built in an uninterruptible
        // region (an acquireRelease acquire): closing its scope must stop them.
        yield* FiberSet.run(
          perConnection,
          // The fast path lives as long as the reader: once it is gone (closed, replaced, the manager
          // shutting down), frames wait in the connection, and its socket pauses, rather than going
          // to an inbox nobody drains.
          Effect.suspend(() => {
            connection.unsafeReceive(receiverFor(peer, slot, connection))
            return Effect.interruptible(read(peer, slot, connection))
          }).pipe(Effect.ensuring(Effect.sync(() => connection.unsafeReceive(undefined))))
        )
      })

    /**
     * Starts the peer's dialer unless it is connected or has one. `lostAt`: when the connection that
     * just ended was made (a short one backs off before the redial); undefined at start.
     */
    const startDialer = (peer: PeerId, slot: Slot, lostAt: number | undefined): Effect.Effect<void> =>
      Effect.suspend(() => {
        if (!validators.has(peer) || slot.connection !== undefined || slot.dialer !== "none") {
          return Effect.void
        }
        slot.dialer = "waiting"
        return Effect.asVoid(
          FiberMap.run(
            dialers,
            peer,
            Effect.interruptible(keepConnected(peer, slot, lostAt)).pipe(
              // Whatever ended it (a connection, an interruption, a bug), a validator without a
              // connection keeps a dialer, unless the manager is closing.
              Effect.ensuring(
                Effect.suspend(() => {
                  slot.dialer = "none"
                  return closing || slot.connection !== undefined
                    ? Effect.void
                    : startDialer(peer, slot, now())
                })
              )
            )
          )
        )
      })

    /** Dials a validator until it is connected, backing off on failure or flapping; then ends. */
    const keepConnected = (peer: PeerId, slot: Slot, lostAt: number | undefined) =>
      Effect.gen(function* () {
        if (slot.backoff === undefined) slot.backoff = yield* Schedule.driver(redialSchedule)
        const backoff = slot.backoff
        const wait = Effect.orElse(backoff.next(undefined), () => Effect.void)
        if (lostAt !== undefined) {
          // A stable connection starts the schedule over; a short one backs off first, so a peer
          // that accepts and drops at once is not redialled in a loop.
          if (now() - lostAt >= stableMillis) yield* backoff.reset
          else yield* wait
        }
        // The peer's own dial is the one both sides keep: give it the time to arrive first.
        if (peer < local && graceMillis > 0) yield* Effect.sleep(graceFor(peer))
        while (slot.connection === undefined) {
          if (yield* registry.isBanned(peer)) {
            yield* wait
            continue
          }
          const addresses = yield* registry.dialOrder(peer)
          for (const address of addresses) {
            if (slot.connection !== undefined) break
            yield* registry.setConnection(peer, "connecting", { address })
            // A defect in one attempt (a bug) is logged and counted as a failed dial: it must not
            // end this peer's redial loop for good. The handshake timeout starts with the permit.
            const dialed = yield* dialPermits.withPermits(1)(
              Effect.suspend(() => {
                slot.dialer = "dialing"
                return Effect.either(
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
              })
            )
            // An address that answers with another key only loses health: whoever is there proved
            // it is not this peer, so the peer itself is not penalised.
            yield* registry.recordDial(peer, address, Either.isRight(dialed))
            if (Either.isRight(dialed)) yield* register(dialed.right)
            slot.dialer = "waiting"
          }
          if (slot.connection === undefined) {
            yield* registry.setConnection(peer, "disconnected", { reason: "dial failed" })
            yield* wait
          }
        }
      })

    // Listen, admitting validators (and non-validators if configured) that are not banned, and
    // keeping handshake slots for validators' hosts.
    const listener = yield* transport.listen(options.listen, {
      authorize: (peer) => admitted(peer),
      reserved: (host) => validatorHosts.has(host)
    })
    yield* listener.connections.pipe(
      Stream.runForEach((connection) => register(connection)),
      Effect.interruptible,
      Effect.forkScoped
    )
    // A refusal of a proven key goes to the registry, which tells of repeated refusals of a peer it
    // knows (`Refused`); the counts by reason are the listener's (`refused`).
    yield* listener.refusals.pipe(
      Stream.runForEach((refusal) =>
        refusal.peer === undefined
          ? Effect.void
          : registry.refused(refusal.peer as PeerId, refusal.reason, refusal.detail)
      ),
      Effect.interruptible,
      Effect.forkScoped
    )

    // A ban closes the banned peer's connection.
    yield* registry.changes.pipe(
      Stream.runForEach((event) =>
        Effect.suspend(() => {
          if (event._tag !== "Banned") return Effect.void
          const slot = slots.get(event.peer)
          const connection = slot?.connection
          return slot === undefined || connection === undefined
            ? Effect.void
            : detach(event.peer, slot, connection, "banned", event.reason)
        })
      ),
      Effect.interruptible,
      Effect.forkScoped
    )

    // One ticker for every connection's heartbeat: one Clock sleep per node, not per connection.
    yield* Effect.gen(function* () {
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
    }).pipe(
      Effect.repeat(Schedule.spaced(Duration.millis(heartbeatMillis))),
      Effect.interruptible,
      Effect.forkScoped
    )

    for (const peer of sortedValidators) if (peer !== local) yield* startDialer(peer, slotOf(peer), undefined)

    /** Queues on `connection`, or on the peer's current one if `connection` lost a duplicate tie-break since. */
    const sendOn = (
      peer: PeerId,
      connection: Transport.Connection,
      channel: number,
      messages: ReadonlyArray<Frame.Outbound>
    ) => {
      const error = connection.unsafeSend(channel, messages)
      if (error?._tag !== "ConnectionClosed") return error
      const current = slots.get(peer)?.connection
      return current !== undefined && current !== connection ? current.unsafeSend(channel, messages) : error
    }

    const notConnected = (peer: PeerId) =>
      new PeerNotConnected({ peer, detail: "not connected (pass waitForConnection to wait)" })

    return {
      localPeer: local,
      address: listener.address,
      unsafeSend: (peer, channel, messages) => {
        const connection = slots.get(peer)?.connection
        return connection === undefined ? notConnected(peer) : sendOn(peer, connection, channel, messages)
      },
      send: (peer, channel, messages, sendOptions) =>
        Effect.suspend(() => {
          const connection = slots.get(peer)?.connection
          if (connection !== undefined) {
            const error = sendOn(peer, connection, channel, messages)
            return error === undefined ? Effect.void : Effect.fail(error)
          }
          if (sendOptions?.waitForConnection === undefined) return Effect.fail(notConnected(peer))
          const target = slotOf(peer)
          target.waiting++
          return Effect.gen(function* () {
            while (target.connection === undefined) yield* Deferred.await(target.changed)
            return target.connection
          }).pipe(
            Effect.timeoutFail({
              duration: sendOptions.waitForConnection,
              onTimeout: () => new PeerNotConnected({ peer, detail: "no connection within the wait" })
            }),
            Effect.ensuring(
              Effect.sync(() => {
                target.waiting--
                forgetIfIdle(peer, target)
              })
            ),
            Effect.flatMap((connected) => {
              const error = sendOn(peer, connected, channel, messages)
              return error === undefined ? Effect.void : Effect.fail(error)
            })
          )
        }),
      inbound: Stream.repeatEffectChunk(Effect.map(inbox.take(256), Chunk.unsafeFromArray)),
      unsafePoll: (max) => inbox.poll(max),
      unsafeOnInbound: (listener) => inbox.onReady(listener),
      connected: Effect.sync(() =>
        [...slots].filter(([, s]) => s.connection !== undefined).map(([peer]) => peer)
      ),
      connection: (peer) => Effect.sync(() => Option.fromNullable(slots.get(peer)?.connection)),
      events: registry.changes,
      refused: listener.refused
    } satisfies PeerManagerShape
  }) as Effect.Effect<
    PeerManagerShape,
    PeersConfig.InvalidPeersConfig | TransportError.ListenError,
    Scope.Scope | Transport.Transport | PeerRegistry
  >
