// Validator-set epochs: the last `trackedEpochs` sets the application handed over. The node admits
// and dials their union (a validator of the set being left still delivers its last messages), and
// broadcasts to the newest. A peer that leaves every tracked set keeps its connection for
// `leaveGrace`, then is dropped.
import type { PeerManager } from "@hotstuff2/peers"
import type { Identity } from "@hotstuff2/wire"

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
