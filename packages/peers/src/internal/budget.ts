// The connection budget (issue 13), like libp2p's connection manager with watermarks. With more
// validators (this node left out) than `maxConnections`, the node is in budget mode: it dials only
// the peers it wants (`want`, by tag) or sends to, and a pass on the Clock closes the least recently
// used idle connections once it holds more than `maxConnections`, down to `trimTo`. At or under the
// set size nothing of this runs: the full mesh, as before.
//
// Use is a flag per slot, set by application sends and receives (never by heartbeats) without a
// Clock read; the pass, once per `heartbeatInterval`, turns flags into times.
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as FiberHandle from "effect/FiberHandle"
import * as FiberSet from "effect/FiberSet"
import * as Schedule from "effect/Schedule"
import type * as Scope from "effect/Scope"
import type { PeerId } from "../PeerManager.js"
import type * as PeersConfig from "../PeersConfig.js"
import type { Dialer } from "./dialer.js"
import type { Slot } from "./slot.js"

/** The close reason of a connection the budget trims: clean, and never charged to the peer. */
export const OVER_BUDGET = "over-budget"

export interface Budget {
  /** Budget mode: more validators (this node left out) than `maxConnections`. */
  readonly budgeted: () => boolean
  /**
   * Whether this node dials the validator now: always in full mesh; in budget mode while it is
   * wanted, a `send` waits for it, or a send found it not connected within `idleBeforeTrim`.
   */
  readonly keeps: (peer: PeerId) => boolean
  /** Replaces the peers wanted under `tag` (an empty list clears it): dialled, kept, never trimmed. */
  readonly want: (tag: string, peers: ReadonlyArray<PeerId>) => Effect.Effect<void>
  /** A send found the validator not connected: in budget mode, dials it in the background. */
  readonly demand: (peer: PeerId) => void
  /** Connections closed as `over-budget` so far. */
  readonly trimmed: () => number
  /** The validator set changed: budget mode may have begun or ended (the trim pass with it). */
  readonly validatorsChanged: Effect.Effect<void>
}

export const makeBudget = (deps: {
  readonly config: PeersConfig.PeersConfig
  readonly local: PeerId
  /** The validator set, owned by the manager. */
  readonly validators: ReadonlySet<PeerId>
  readonly slots: ReadonlyMap<PeerId, Slot>
  readonly slotOf: (peer: PeerId) => Slot
  /** Peers `connectTo`'d: kept whatever the budget says. */
  readonly invited: ReadonlySet<PeerId>
  readonly now: () => number
  readonly dialer: () => Dialer
  /** Closes the peer's connection with a reason (its slot goes once idle). */
  readonly disconnect: (peer: PeerId, reason: string, detail: string) => Effect.Effect<void>
}): Effect.Effect<Budget, never, Scope.Scope> =>
  Effect.gen(function* () {
    const { config, local, validators, slots, slotOf, invited, now, dialer, disconnect } = deps
    const idleMillis = Duration.toMillis(config.idleBeforeTrim)
    /** Peers wanted under each tag, and how many tags want each peer. */
    const tags = new Map<string, ReadonlySet<PeerId>>()
    const wanted = new Map<PeerId, number>()
    let trimmed = 0
    const pass = yield* FiberHandle.make<void, never>()
    // On-demand dials start from `unsafeSend`, outside any Effect: run in the manager's scope.
    const runFork = yield* FiberSet.makeRuntime<never, void, never>()

    const budgeted = () => validators.size > config.maxConnections

    const keeps = (peer: PeerId): boolean => {
      if (!budgeted() || wanted.has(peer)) return true
      const slot = slots.get(peer)
      return slot !== undefined && (slot.waiting > 0 || now() - slot.demandedAt < idleMillis)
    }

    const demand = (peer: PeerId) => {
      if (!budgeted() || !validators.has(peer)) return
      const slot = slotOf(peer)
      slot.demandedAt = now()
      if (slot.dialer === "none") runFork(dialer().startDialer(peer, slot, undefined))
    }

    const want = (tag: string, peers: ReadonlyArray<PeerId>) =>
      Effect.suspend(() => {
        const next = new Set(peers.filter((peer) => peer !== local))
        const previous = tags.get(tag) ?? new Set<PeerId>()
        if (next.size === 0) tags.delete(tag)
        else tags.set(tag, next)
        for (const peer of next) if (!previous.has(peer)) wanted.set(peer, (wanted.get(peer) ?? 0) + 1)
        let released = false
        for (const peer of previous) {
          if (next.has(peer)) continue
          const count = (wanted.get(peer) ?? 1) - 1
          if (count > 0) {
            wanted.set(peer, count)
            continue
          }
          wanted.delete(peer)
          released = true
          // Kept until now counts as used until now: a peer wanted again next view is not trimmed
          // in between, and one no longer wanted becomes trimmable after `idleBeforeTrim` idle.
          const slot = slots.get(peer)
          if (slot !== undefined) slot.used = true
        }
        return Effect.gen(function* () {
          if (released) yield* dialer().prune
          for (const peer of [...next].sort()) {
            if (validators.has(peer)) yield* dialer().startDialer(peer, slotOf(peer), undefined)
          }
        })
      })

    /**
     * Flags to times, then, over `maxConnections`, closes the least recently used connections that
     * are neither wanted nor `connectTo`'d nor used within `idleBeforeTrim`, down to `trimTo`.
     */
    const trim = Effect.suspend(() => {
      const at = now()
      let open = 0
      const idle: Array<readonly [PeerId, Slot]> = []
      for (const [peer, slot] of slots) {
        // A reader held back by this node's own consumer has data waiting: in use.
        if (slot.used || slot.readerBlocked) {
          slot.used = false
          slot.lastUsedAt = at
        }
        if (slot.connection === undefined) continue
        open++
        if (wanted.has(peer) || invited.has(peer) || at - slot.lastUsedAt < idleMillis) continue
        idle.push([peer, slot])
      }
      if (open <= config.maxConnections || idle.length === 0) return Effect.void
      idle.sort(([a, x], [b, y]) => x.lastUsedAt - y.lastUsedAt || (a < b ? -1 : a > b ? 1 : 0))
      const closing = idle.slice(0, open - config.trimTo)
      trimmed += closing.length
      const detail = `${open} connections, over maxConnections ${config.maxConnections}: idle ones closed down to ${config.trimTo}`
      return Effect.forEach(closing, ([peer]) => disconnect(peer, OVER_BUDGET, detail), { discard: true })
    })

    const validatorsChanged = Effect.suspend(() =>
      budgeted()
        ? FiberHandle.run(
            pass,
            trim.pipe(
              Effect.repeat(Schedule.spaced(config.heartbeatInterval)),
              Effect.asVoid,
              Effect.interruptible
            ),
            { onlyIfMissing: true }
          )
        : FiberHandle.clear(pass)
    )
    yield* validatorsChanged

    return {
      budgeted,
      keeps,
      want,
      demand,
      trimmed: () => trimmed,
      validatorsChanged: Effect.asVoid(validatorsChanged)
    } satisfies Budget
  })
