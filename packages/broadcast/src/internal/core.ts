// What every part of the broadcaster shares: its options, the peers services, the validator sets,
// the dedup windows and this node's sequence counter. Built once by `broadcaster.ts`.
import type { PeerManager, PeerRegistry } from "@hotstuff2/peers"
import type { Identity } from "@hotstuff2/wire"
import type * as Effect from "effect/Effect"
import type * as Tracer from "effect/Tracer"
import type * as BroadcastConfig from "../BroadcastConfig.js"
import type { Observer } from "../Broadcaster.js"
import { Dedup } from "./dedup.js"

type PeerId = Identity.PeerId

export interface Core {
  readonly config: BroadcastConfig.BroadcastConfig
  readonly manager: PeerManager.PeerManagerShape
  readonly registry: PeerRegistry.PeerRegistryShape
  readonly identity: Identity.Identity
  readonly self: PeerId
  readonly networkId: string
  readonly tracing: boolean
  readonly tracer: Tracer.Tracer | undefined
  readonly observer: Observer
  readonly admitNonValidators: boolean
  /** Every tracked set's members and this node: whose envelopes are accepted. */
  readonly validators: Set<PeerId>
  /** The newest set without this node: whom `broadcast` reaches. */
  others: ReadonlyArray<PeerId>
  readonly dedup: Dedup
  /** The next sequence number of this node's envelopes. */
  sequence: bigint
  /** The Clock's millis, read synchronously. */
  readonly now: () => number
  /** Runs `effect` in the background, in the broadcaster's scope (from synchronous code). */
  readonly fork: (effect: Effect.Effect<void>) => void
  /**
   * When this node's upload would be done with what it has queued so far (Clock millis), at
   * `uploadBytesPerSecond`: its backlog, which delays whatever it sends next.
   */
  uploadBusyUntil: number
  /** The newest validator set's epoch: the one this node's trees are drawn over. */
  epoch: bigint
  /** The members of each tracked epoch (this node included when it is one), for trees. */
  readonly sets: Map<bigint, ReadonlyArray<PeerId>>
}

/** Epochs whose sets are kept for the trees of envelopes that arrive late. */
const TRACKED_SETS = 4

/** Records the newest set (`setValidators`), forgetting the oldest past `TRACKED_SETS`. */
export const recordSet = (core: Core, epoch: bigint, members: ReadonlyArray<PeerId>): void => {
  core.sets.set(epoch, members)
  if (epoch >= core.epoch) core.epoch = epoch
  while (core.sets.size > TRACKED_SETS) {
    let oldest: bigint | undefined
    for (const e of core.sets.keys()) if (oldest === undefined || e < oldest) oldest = e
    core.sets.delete(oldest!)
  }
}

export const makeCore = (
  fields: Omit<Core, "validators" | "others" | "dedup" | "sets" | "uploadBusyUntil"> & {
    readonly validators: ReadonlyArray<PeerId>
  }
): Core => {
  const validators = new Set(fields.validators)
  return {
    ...fields,
    validators,
    sets: new Map([[fields.epoch, [...fields.validators]]]),
    uploadBusyUntil: 0,
    others: fields.validators.filter((v) => v !== fields.self),
    dedup: new Dedup(fields.config.dedupWindow, fields.config.maxOrigins, (origin) =>
      validators.has(origin as PeerId)
    )
  }
}

/** Adds `bytes` to this node's upload backlog; returns the backlog before them, in milliseconds. */
export const charge = (core: Core, bytes: number): number => {
  const now = core.now()
  const start = Math.max(now, core.uploadBusyUntil)
  core.uploadBusyUntil = start + (bytes * 1000) / core.config.uploadBytesPerSecond
  return start - now
}
