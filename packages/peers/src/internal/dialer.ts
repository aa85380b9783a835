// Dialling: one dialer fiber per peer, only while the peer is disconnected. It dials at once (or
// after the dial grace, or a backoff after a short connection), then on a jittered exponential
// schedule, `maxConcurrentDials` dials at a time per node. A connection that arrives while the
// dialer waits (backoff, grace, a dial permit) ends the dialer; one that arrives while it dials lets
// the dial finish, and the tie-break keeps one of the two. In budget mode (budget.ts) only the peers
// this node wants or sends to get a dialer, and it ends once the peer is neither.
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
    // Dialers start in PeerId order, so a smaller peer dials its larger peers in that order too,
    // `maxConcurrentDials` at a time: this node's dial comes after those of the validators between
    // the two. The grace given to that peer grows with their number, at most `redialCap`.
    let sortedValidators = [...validators, local].sort()
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
        // The peer's own dial is the one both sides keep: give it the time to arrive first.
        if (peer < local && graceMillis > 0 && !budgeted()) yield* Effect.sleep(graceFor(peer))
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

    const connected = (peer: PeerId, slot: Slot): Effect.Effect<void> =>
      slot.dialer === "waiting" ? FiberMap.remove(dialers, peer) : Effect.void

    // A slot only for the peers dialled: in budget mode, most validators get none until needed.
    const startAll = Effect.gen(function* () {
      for (const peer of sortedValidators)
        if (peer !== local && dials(peer)) yield* startDialer(peer, slotOf(peer), undefined)
    })

    const prune = Effect.gen(function* () {
      for (const peer of [...dialers].map(([peer]) => peer)) {
        if (!dials(peer)) {
          yield* FiberMap.remove(dialers, peer)
        }
      }
    })

    const validatorsChanged = Effect.suspend(() => {
      sortedValidators = [...validators, local].sort()
      return prune
    })

    return { dials, startDialer, connected, startAll, validatorsChanged, prune } satisfies Dialer
  })
