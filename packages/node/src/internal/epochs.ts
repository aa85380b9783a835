// Validator-set epochs: the last `trackedEpochs` sets the application handed over. The node admits
// and dials their union (a validator of the set being left still delivers its last messages), and
// broadcasts to the newest. A peer that leaves every tracked set keeps its connection for
// `leaveGrace`, then is dropped.
import type { Broadcaster } from "@hotstuff2/broadcast"
import type { Discovery } from "@hotstuff2/discovery"
import type { PeerManager } from "@hotstuff2/peers"
import { Transport } from "@hotstuff2/transport"
import { Identity } from "@hotstuff2/wire"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as PubSub from "effect/PubSub"
import * as Stream from "effect/Stream"
import { InvalidValidatorSet, type PeerEvent, type ValidatorEntry } from "../NodeNetwork.js"

/** The validator-set events this module publishes. */
type NodeEvent = Extract<PeerEvent, { readonly _tag: "ValidatorJoined" | "ValidatorLeft" }>

export type PeerId = Identity.PeerId

export interface EpochSet {
  readonly epoch: bigint
  readonly validators: ReadonlyArray<PeerManager.Validator>
}

/** What an update changed in the union of the tracked sets. */
export interface Change {
  readonly joined: ReadonlyArray<PeerId>
  readonly left: ReadonlyArray<PeerId>
}

export class Epochs {
  private sets: Array<EpochSet>

  constructor(
    first: EpochSet,
    private readonly tracked: number
  ) {
    this.sets = [first]
  }

  get newest(): EpochSet {
    return this.sets[this.sets.length - 1]!
  }

  /** Every tracked set's members, each once, with the addresses every set gave it. */
  union(): ReadonlyArray<PeerManager.Validator> {
    const byId = new Map<PeerId, Set<string>>()
    for (const set of this.sets) {
      for (const v of set.validators) {
        const addresses = byId.get(v.id) ?? new Set<string>()
        for (const a of v.addresses) addresses.add(a)
        byId.set(v.id, addresses)
      }
    }
    return [...byId].map(([id, addresses]) => ({ id, addresses: [...addresses] }))
  }

  /** The epochs a peer is a member of, oldest first. */
  epochsOf(peer: PeerId): ReadonlyArray<bigint> {
    return this.sets.filter((s) => s.validators.some((v) => v.id === peer)).map((s) => s.epoch)
  }

  /** Adds a newer set (the oldest beyond `tracked` is no longer tracked); what changed in the union. */
  add(set: EpochSet): Change {
    const before = new Set(this.union().map((v) => v.id))
    this.sets = [...this.sets, set].slice(-this.tracked)
    const after = new Set(this.union().map((v) => v.id))
    return {
      joined: [...after].filter((id) => !before.has(id)),
      left: [...before].filter((id) => !after.has(id))
    }
  }
}

/** What the node's epochs act on: the peer manager, the broadcaster and discovery. */
export interface Targets {
  readonly manager: PeerManager.PeerManagerShape
  readonly broadcaster: Broadcaster.BroadcasterShape
  readonly discovery: Discovery.DiscoveryShape
}

/**
 * `updateValidators` and what it drives. Updates and the end of each grace are serialized (one
 * permit): each applies the state as it is then, so a later update is never overwritten by an
 * earlier one's grace, and every leaver keeps its own grace, however graces overlap.
 */
export const make = (options: {
  readonly self: PeerId
  readonly validators: ReadonlyArray<PeerManager.Validator>
  readonly tracked: number
  readonly leaveGraceMillis: number
  readonly targets: Targets
}) =>
  Effect.gen(function* () {
    const { self, targets } = options
    const epochs = new Epochs({ epoch: 0n, validators: options.validators }, options.tracked)
    const events = yield* PubSub.sliding<NodeEvent>(1024)
    const scope = yield* Effect.scope
    const permit = yield* Effect.makeSemaphore(1)
    const clock = yield* Effect.clock
    /** Peers that left every tracked set, with their addresses, kept until the Clock millis given. */
    const graced = new Map<PeerId, { readonly validator: PeerManager.Validator; readonly until: number }>()

    /** The tracked sets, and the peers still in their grace, to the manager, broadcaster and discovery. */
    const apply = Effect.gen(function* () {
      const now = clock.unsafeCurrentTimeMillis()
      const union = epochs.union()
      for (const [peer, entry] of graced) {
        if (entry.until <= now || union.some((v) => v.id === peer)) graced.delete(peer)
      }
      const keep = [...union, ...[...graced.values()].map((g) => g.validator)]
      yield* targets.manager.setValidators(keep)
      yield* targets.broadcaster.setValidators(
        epochs.newest.validators.map((v) => v.id),
        keep.map((v) => v.id),
        epochs.newest.epoch
      )
      yield* targets.discovery.setValidators(epochs.newest.epoch, union)
    })

    const updateValidators = (epoch: bigint, entries: ReadonlyArray<ValidatorEntry>) =>
      permit.withPermits(1)(
        Effect.gen(function* () {
          const refuse = (detail: string) => new InvalidValidatorSet({ epoch, detail })
          if (epoch <= epochs.newest.epoch) {
            return yield* refuse(
              `epoch ${epoch} is not newer than the newest tracked, ${epochs.newest.epoch}`
            )
          }
          if (entries.length === 0) return yield* refuse("a validator set has at least one member")
          const ids = new Set<string>()
          for (const entry of entries) {
            if (Either.isLeft(Identity.parsePeerId(entry.id))) {
              return yield* refuse(`${String(entry.id)} is not a PeerId`)
            }
            if (ids.has(entry.id)) return yield* refuse(`${entry.id.slice(0, 8)} is listed twice`)
            ids.add(entry.id)
            for (const address of entry.addresses ?? []) {
              if (Transport.parseAddress(address) === undefined) {
                return yield* refuse(
                  `address ${JSON.stringify(address)} of ${entry.id.slice(0, 8)} is not host:port`
                )
              }
            }
          }
          const before = epochs.union()
          const change = epochs.add({
            epoch,
            validators: entries.map((e) => ({ id: e.id, addresses: [...(e.addresses ?? [])] }))
          })
          const until = clock.unsafeCurrentTimeMillis() + options.leaveGraceMillis
          for (const v of before) if (change.left.includes(v.id)) graced.set(v.id, { validator: v, until })
          yield* apply
          for (const peer of change.joined) {
            if (peer !== self)
              yield* PubSub.publish(events, { _tag: "ValidatorJoined" as const, peer, epoch })
          }
          for (const peer of change.left) {
            if (peer !== self) yield* PubSub.publish(events, { _tag: "ValidatorLeft" as const, peer, epoch })
          }
          // When this grace is over, the state then is applied: these leavers go unless they came back.
          if (change.left.length > 0) {
            yield* Effect.forkIn(
              Effect.interruptible(
                Effect.zipRight(Effect.sleep(options.leaveGraceMillis), permit.withPermits(1)(apply))
              ),
              scope
            )
          }
        })
      )

    return {
      updateValidators,
      events: Stream.fromPubSub(events),
      epochsOf: (peer: PeerId) => epochs.epochsOf(peer),
      validatorSet: Effect.sync(() => ({
        epoch: epochs.newest.epoch,
        validators: epochs.newest.validators.map((v) => v.id)
      }))
    }
  })
