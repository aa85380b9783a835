// Dialling: one dialer fiber per peer, only while the peer is disconnected. It dials at once (or
// after the dial grace, or a backoff after a short connection), then on a jittered exponential
// schedule, at most `maxConcurrentDials` dials at a time per node (fewer while dials are slow:
// dialWindow.ts). Of each pair of validators one dials first (each node, the half of the PeerId
// ring that follows it) and the other gives it a grace, which lasts while other first dials keep
// arriving (at most `redialCap`). A connection that arrives while the dialer waits (backoff, grace,
// a dial permit) ends the dialer; one that arrives while it dials lets the dial finish, and the
// tie-break keeps one of the two. In budget mode (budget.ts) only the peers this node wants or
// sends to get a dialer, and it ends once the peer is neither.
import { type Transport, TransportError } from "@hotstuff2/transport"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as FiberMap from "effect/FiberMap"
import * as Schedule from "effect/Schedule"
import type * as Scope from "effect/Scope"
import type { PeerId } from "../PeerManager.js"
import type { PeerRegistryShape } from "../PeerRegistry.js"
import type * as PeersConfig from "../PeersConfig.js"
import { DialWindow } from "./dialWindow.js"
import type { Slot } from "./slot.js"

export interface Dialer {
  /**
   * Who gets a dialer: the peers this node keeps a connection to by dialling them (the validators;
   * in budget mode, only those wanted or sent to).
   */
  readonly dials: (peer: PeerId) => boolean
  /**
   * Starts the peer's dialer unless it is connected or has one. `lostAt`: when the connection that
   * just ended was made (a short one backs off before the redial); undefined at start.
   */
  readonly startDialer: (peer: PeerId, slot: Slot, lostAt: number | undefined) => Effect.Effect<void>
  /** The peer is connected: a dialer still waiting has nothing left to do; one in the middle of a dial finishes it. */
  readonly connected: (peer: PeerId, slot: Slot) => Effect.Effect<void>
  /** Starts every dialer, in PeerId order. */
  readonly startAll: Effect.Effect<void>
  /** The validator set changed: the dial grace is worked out again, and peers that left lose their dialer. */
  readonly validatorsChanged: Effect.Effect<void>
  /** Ends the dialers of peers no longer dialled (no longer wanted, in budget mode). */
  readonly prune: Effect.Effect<void>
}

export const makeDialer = (deps: {
  readonly config: PeersConfig.PeersConfig
  readonly transport: Transport.TransportShape
  readonly registry: PeerRegistryShape
  readonly local: PeerId
  /** The validator set, owned by the manager. */
  readonly validators: ReadonlySet<PeerId>
  /** In budget mode, whether this node dials the validator now (wanted or sent to); always true in full mesh. */
  readonly keeps: (peer: PeerId) => boolean
  /**
   * Budget mode: the dial grace is not given, since the peer may not want this connection (and a
   * send may be waiting for it); when both sides dial, the tie-break keeps one.
   */
  readonly budgeted: () => boolean
  readonly now: () => number
  readonly slotOf: (peer: PeerId) => Slot
  /** Makes a dialled connection the peer's one connection, or closes it as a duplicate. */
  readonly register: (connection: Transport.Connection) => Effect.Effect<void>
}): Effect.Effect<Dialer, never, Scope.Scope> =>
  Effect.gen(function* () {
    const { config, transport, registry, local, validators, keeps, budgeted, now, slotOf, register } = deps
    const dialers = yield* FiberMap.make<PeerId, void, never>()
    // Runs before the dialers are interrupted (finalizers run in reverse): no dialer restarts then.
    let closing = false
    yield* Effect.addFinalizer(() => Effect.sync(() => (closing = true)))
    const stableMillis = Duration.toMillis(config.stableAfter)
    const graceMillis = Duration.toMillis(config.dialGrace)
    // Who dials first: the validators (this node among them) sit on a ring in PeerId order, and each
    // dials first the half of the ring that follows it; the peer at exactly half way (an even count)
    // is dialled first by the smaller PeerId. Each node then dials first about half of the others, in
    // ring order from itself, `maxConcurrentDials` at a time, so no node's queue is longer than half
    // the set (in PeerId order alone, the smallest PeerId dialled every other validator first and
    // its queue was the whole mesh's critical path). The other side waits for that dial (the grace)
    // and then dials too; whichever connections result, the tie-break keeps one (the one the smaller
    // PeerId dialled when there are two). Both sides work the choice out from the validator set; when
    // their sets differ, at worst both dial at once, or both wait a grace.
    let ring = new Map<PeerId, number>()
    const setRing = () => {
      ring = new Map([...validators, local].sort().map((peer, i) => [peer, i]))
    }
    setRing()
    /** Steps along the ring from `from` to `to`. */
    const distance = (from: PeerId, to: PeerId): number => {
      const a = ring.get(from)
      const b = ring.get(to)
      return a === undefined || b === undefined ? 0 : (b - a + ring.size) % ring.size
    }
    /** Whether this node dials `peer` first (the peer waits for this node's dial). */
    const dialsFirst = (peer: PeerId): boolean => {
      const ahead = distance(local, peer)
      // Off the ring (not a validator here): the smaller PeerId, as the tie-break.
      if (ahead === 0) return local < peer
      return 2 * ahead < ring.size || (2 * ahead === ring.size && local < peer)
    }
    /** The longest this node waits for a peer's first dial, however long that peer's queue looks. */
    const graceCapMillis = Math.max(graceMillis, Duration.toMillis(config.redialCap))
    // The peer dials first the validators after it on the ring, in ring order: this node's dial comes
    // after those of the validators between the two, `maxConcurrentDials` at a time. The grace grows
    // with their number, at most `graceCapMillis`.
    const graceFor = (peer: PeerId): number => {
      const before = Math.max(0, distance(peer, local) - 1)
      const turns = 1 + Math.floor(before / config.maxConcurrentDials)
      return Math.min(graceMillis * turns, graceCapMillis)
    }
    // Monotonic millis when the last first dial from a peer reached this node (and was kept). While
    // such dials keep coming, the peers are still working through their dial queues, so a peer whose
    // dial has not come yet is still expected: on a busy machine a turn of dials takes longer than
    // `dialGrace`, and a grace counted on the clock alone would let this side dial too (two
    // handshakes for the pair, and the extra handshakes slow every other one down).
    let firstDialArrivedAt = Number.NEGATIVE_INFINITY
    /**
     * Waits for `peer`'s first dial: its grace, then on while other peers' first dials keep arriving
     * (each allows one more `dialGrace`), at most `graceCapMillis` in all. A connection arriving
     * meanwhile ends the dialer (`connected`).
     */
    const awaitFirstDial = (peer: PeerId) =>
      Effect.gen(function* () {
        const startedAt = now()
        let until = startedAt + graceFor(peer)
        for (;;) {
          const at = now()
          if (at >= until) {
            const extended = Math.min(firstDialArrivedAt + graceMillis, startedAt + graceCapMillis)
            if (extended <= at) return
            until = extended
          }
          yield* Effect.sleep(Duration.millis(until - at))
        }
      })
    const window = new DialWindow(config.maxConcurrentDials, Duration.toMillis(config.slowDialAfter))
    const dialPermits = yield* Effect.makeSemaphore(window.permits)
    const redialSchedule = Schedule.exponential(config.redialBase, config.redialFactor).pipe(
      Schedule.jittered,
      Schedule.either(Schedule.spaced(config.redialCap))
    )

    const dials = (peer: PeerId): boolean => validators.has(peer) && keeps(peer)

    const startDialer = (peer: PeerId, slot: Slot, lostAt: number | undefined): Effect.Effect<void> =>
      Effect.suspend(() => {
        if (!dials(peer) || slot.connection !== undefined || slot.dialer !== "none") {
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
        // The peer dials first: give its dial the time to arrive (one handshake for the pair).
        if (!dialsFirst(peer) && graceMillis > 0 && !budgeted()) yield* awaitFirstDial(peer)
        // No longer wanted nor sent to (budget mode): the dialer ends.
        while (slot.connection === undefined && dials(peer)) {
          if (yield* registry.isBanned(peer)) {
            yield* wait
            continue
          }
          const addresses = yield* registry.dialOrder(peer)
          if (addresses.length === 0) {
            // Nowhere to dial yet (discovery has not found it): no backoff spinning, the dialer waits
            // until an address is learned, or `redialCap` in case that news was missed.
            yield* registry.setConnection(peer, "disconnected", { reason: "no address known" })
            yield* Effect.timeout(Deferred.await(slot.addressed), config.redialCap).pipe(Effect.ignore)
            continue
          }
          for (const address of addresses) {
            if (slot.connection !== undefined) break
            yield* registry.setConnection(peer, "connecting", { address })
            // A defect in one attempt (a bug) is logged and counted as a failed dial: it must not
            // end this peer's redial loop for good. The handshake timeout starts with the permit.
            let startedAt = 0
            const dialed = yield* dialPermits.withPermits(1)(
              Effect.suspend(() => {
                slot.dialer = "dialing"
                startedAt = now()
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
            const timedOut = Either.isLeft(dialed) && dialed.left.reason === "timeout"
            if ((Either.isRight(dialed) || timedOut) && window.ended(startedAt, now(), timedOut)) {
              yield* dialPermits.resize(window.permits)
            }
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

    const connected = (peer: PeerId, slot: Slot): Effect.Effect<void> => {
      if (!dialsFirst(peer) && slot.connection?.direction === "inbound") firstDialArrivedAt = now()
      return slot.dialer === "waiting" ? FiberMap.remove(dialers, peer) : Effect.void
    }

    // In ring order from this node: the peers it dials first, nearest first (the order the grace
    // assumes), then those it waits for. A slot only for the peers dialled: in budget mode, most
    // validators get none until needed.
    const startAll = Effect.gen(function* () {
      const order = [...validators].sort((a, b) => distance(local, a) - distance(local, b))
      for (const peer of order) if (dials(peer)) yield* startDialer(peer, slotOf(peer), undefined)
    })

    const prune = Effect.gen(function* () {
      for (const peer of [...dialers].map(([peer]) => peer)) {
        if (!dials(peer)) {
          yield* FiberMap.remove(dialers, peer)
        }
      }
    })

    const validatorsChanged = Effect.suspend(() => {
      setRing()
      return prune
    })

    return { dials, startDialer, connected, startAll, validatorsChanged, prune } satisfies Dialer
  })
