// The origin's side of a tree broadcast: draws the tree of this view, seals the message once with
// the tree header inside the signed payload, queues it to the root's children, and waits for
// receipts. Whoever has not sent one when the repair timer fires gets a copy from the origin itself
// (then again, twice as late, up to `repairRounds` times), and the relays above them are blamed; a
// relay blamed often is made a leaf in the next trees. The shares repaired feed the adaptive rule.
import type { Identity, Message } from "@hotstuff2/wire"
import * as Clock from "effect/Clock"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as FiberSet from "effect/FiberSet"
import * as Option from "effect/Option"
import * as Random from "effect/Random"
import type * as Scope from "effect/Scope"
import type { BroadcastReceipt, InvalidOutbound } from "../../Broadcaster.js"
import type { Core } from "../core.js"
import { type Encoded, queueTo, receipt, type SealedSlot, sealPayload } from "../outbound.js"
import * as Payload from "../payload.js"
import { encodeTreeHeader, type TreeHeader } from "./header.js"
import { defaultFanout, type Tree, TreeCache } from "./layout.js"

type PeerId = Identity.PeerId

/** One tree broadcast whose receipts are awaited. */
interface Pending {
  readonly sealed: SealedSlot
  readonly tag: Message.MessageTag
  readonly tree: Tree
  /** Members (this node left out) whose receipt has not come. */
  readonly missing: Set<PeerId>
  readonly members: number
  /** Clock millis of the send, and the backlog it waited behind. */
  readonly sentAt: number
  readonly backlog: number
}

/** The view a message names, which draws its tree; messages without one use the clock's second. */
const roundOf = (message: Message.Message, millis: number): bigint =>
  "view" in message && typeof message.view === "bigint" ? message.view : BigInt(Math.floor(millis / 1000))

/** The mean of the last shares repaired, over this many trees. */
const SHARE_WINDOW = 8

export const makeTreeOrigin = (core: Core): Effect.Effect<TreeOrigin, never, Scope.Scope> =>
  Effect.gen(function* () {
    const { config } = core
    const cache = new TreeCache(64)
    const pending = new Map<bigint, Pending>()
    const fibers = yield* FiberSet.make<void, never>()
    const failures = new Map<PeerId, Array<number>>()
    const shares: Array<number> = []
    let fallbackUntil = 0
    const memoryMillis = Duration.toMillis(config.relayFailureMemory)

    /** Indices (into the sorted members) of relays blamed `relayFailuresToDemote` times lately. */
    const demotedOf = (sorted: ReadonlyArray<PeerId>, now: number): Array<number> => {
      const out: Array<number> = []
      for (const [peer, times] of failures) {
        while (times.length > 0 && times[0]! <= now - memoryMillis) times.shift()
        if (times.length === 0) {
          failures.delete(peer)
          continue
        }
        if (times.length < config.relayFailuresToDemote) continue
        const index = sorted.indexOf(peer)
        if (index >= 0) out.push(index)
      }
      return out.sort((a, b) => a - b)
    }

    const blame = (peer: PeerId, now: number) => {
      let times = failures.get(peer)
      if (times === undefined) {
        times = []
        failures.set(peer, times)
      }
      times.push(now)
      core.observer.relayFailed?.(peer)
    }

    const recordShare = (share: number, now: number) => {
      shares.push(share)
      if (shares.length > SHARE_WINDOW) shares.shift()
      const mean = shares.reduce((a, b) => a + b, 0) / shares.length
      if (shares.length === SHARE_WINDOW && mean > config.treeFallbackShare) {
        fallbackUntil = now + Duration.toMillis(config.treeCooldown)
        shares.length = 0
      }
    }

    /** The highest smoothed RTT among `peers`, in milliseconds (0 when none is measured yet). */
    const highestRtt = (peers: ReadonlyArray<PeerId>) =>
      Effect.reduce(peers, 0, (highest, peer) =>
        Effect.map(core.registry.get(peer), (state) =>
          Option.match(state, { onNone: () => highest, onSome: (s) => Math.max(highest, s.rtt ?? 0) })
        )
      )

    /** Whether every one of `peers` has an RTT sample (a new connection has none until its first heartbeat). */
    const measured = (peers: ReadonlyArray<PeerId>) =>
      Effect.map(
        Effect.forEach(peers, (peer) => core.registry.get(peer)),
        (states) => states.every((state) => Option.isSome(state) && state.value.rtt !== undefined)
      )

    /**
     * The time a tree broadcast's last receipt is expected, from its send: the origin's backlog, then
     * per level the upload of `fanout` copies and half an RTT, then half an RTT back. Learned as well:
     * the trees of the last views took `completion` (smoothed) beyond their backlog.
     */
    let completion = 0
    const expected = (tree: Tree, size: number, rtt: number, backlog: number): number => {
      const copies = (size * tree.fanout * 1000) / config.uploadBytesPerSecond
      return backlog + Math.max(tree.depth * (copies + rtt / 2) + rtt / 2, completion)
    }

    /** When the first repair round fires: `repairRttFactor` x the expected time, within the bounds. */
    const repairDelay = (tree: Tree, size: number, rtt: number | undefined, backlog: number): number => {
      const max = Duration.toMillis(config.repairAfterMax)
      // No RTT sample yet (connections younger than a heartbeat) and no tree finished: nothing to
      // go by, so the latest allowed (a repair too early would send the whole set a copy).
      if (rtt === undefined && completion === 0) return max
      const millis = config.repairRttFactor * expected(tree, size, rtt ?? 0, backlog)
      const min = Duration.toMillis(config.repairAfterMin)
      return Math.min(max, Math.max(min, millis))
    }

    /** A tree whose last receipt came `millis` after its send, `backlog` of it spent behind earlier sends. */
    const completed = (millis: number, backlog: number) => {
      const observed = Math.max(0, millis - backlog)
      completion = completion === 0 ? observed : 0.8 * completion + 0.2 * observed
    }

    /**
     * Copies to every validator still missing: itself to those it is connected to, through a
     * connected validator that has it (the missing one's parent first) to the others. The relays
     * above missing validators it is connected to are blamed (first round only): one it cannot reach
     * may only have lost the way back for its receipt.
     */
    const repair = (sequence: bigint, entry: Pending, round: number, now: number) =>
      Effect.gen(function* () {
        const connected = new Set(yield* core.manager.connected)
        const missing = [...entry.missing]
        const reachable = missing.filter((peer) => connected.has(peer))
        const others = missing.filter((peer) => !connected.has(peer))
        if (round === 0) {
          recordShare(missing.length / Math.max(1, entry.members), now)
          const blamed = new Set<PeerId>()
          for (const peer of reachable) {
            const parent = entry.tree.parent(peer)
            // Its parent had it and it did not: the parent did not forward (or its link lost it).
            if (parent !== undefined && parent !== core.self && !entry.missing.has(parent)) blamed.add(parent)
            // A missing relay is down or unreachable: its own children were cut off too.
            if (entry.tree.children(peer).length > 0) blamed.add(peer)
          }
          for (const peer of blamed) blame(peer, now)
        }
        core.observer.repaired?.(missing.length)
        yield* queueTo(core, reachable, entry.sealed, entry.tag)
        if (others.length > 0) {
          const holders = entry.tree.order.filter((peer) => connected.has(peer) && !entry.missing.has(peer))
          for (const peer of others) {
            const parent = entry.tree.parent(peer)
            const via =
              parent !== undefined && parent !== core.self && holders.includes(parent)
                ? parent
                : holders.length > 0
                  ? holders[yield* Random.nextIntBetween(0, holders.length)]!
                  : undefined
            if (via === undefined) continue
            const slot = Payload.forward(Buffer.from(peer, "hex"), entry.sealed.slot)
            core.manager.unsafeSend(via, entry.sealed.channel, [slot])
          }
        }
        if (round + 1 >= config.repairRounds && pending.get(sequence) === entry) {
          pending.delete(sequence)
        }
      })

    const watch = (sequence: bigint, entry: Pending, delay: number) =>
      Effect.gen(function* () {
        for (let round = 0; round < config.repairRounds; round++) {
          yield* Effect.sleep(Duration.millis(delay * 2 ** round))
          if (pending.get(sequence) !== entry) return
          if (entry.missing.size === 0) {
            pending.delete(sequence)
            return
          }
          yield* repair(sequence, entry, round, yield* Clock.currentTimeMillis)
        }
      })

    /**
     * The tree a broadcast of `message` would take now, over the newest set. Relays blamed lately are
     * leaves; so are validators the origin has no connection to, when they would be its children
     * (tried three times: each demotion moves others up).
     */
    const plan = (message: Message.Message, now: number, connected: ReadonlySet<PeerId>): Plan => {
      const members = core.sets.get(core.epoch) ?? [core.self, ...core.others]
      const sorted = [...members].sort()
      const fanout = config.fanout ?? defaultFanout(members.length)
      const demoted = new Set(demotedOf(sorted, now))
      const round = roundOf(message, now)
      const layout = (): Plan => {
        const header: TreeHeader = {
          epoch: core.epoch,
          round,
          fanout,
          demoted: [...demoted].sort((x, y) => x - y)
        }
        const tree = cache.get({
          members: sorted,
          origin: core.self,
          networkId: core.networkId,
          epoch: header.epoch,
          round: header.round,
          fanout,
          demoted: header.demoted
        })
        return { sorted, header, tree }
      }
      let planned = layout()
      for (let attempt = 0; attempt < 3; attempt++) {
        const unreachable = planned.tree.children(core.self).filter((peer) => !connected.has(peer))
        if (unreachable.length === 0) break
        for (const peer of unreachable) demoted.add(sorted.indexOf(peer))
        planned = layout()
      }
      return planned
    }

    /** Seals `message` with the plan's header and queues it to the root's children; repairs follow. */
    const send = (message: Message.Message, encoded: Encoded, planned: Plan | undefined) =>
      Effect.gen(function* () {
        const { sorted, header, tree } =
          planned ?? plan(message, yield* Clock.currentTimeMillis, new Set(yield* core.manager.connected))
        const sealed = yield* sealPayload(
          core,
          message,
          Payload.TREE,
          (bytes) => encodeTreeHeader(header, bytes),
          encoded
        )
        const children = tree.children(core.self)
        // Under a connection budget, the origin's children are kept connected while it relays to them.
        yield* core.manager.want("tree", children)
        const rtt = (yield* measured(children)) ? yield* highestRtt(children) : undefined
        const backlog = Math.max(0, core.uploadBusyUntil - core.now())
        const outcome = yield* queueTo(core, children, sealed, message._tag, config.repairAfterMax)
        const missing = new Set(sorted.filter((peer) => peer !== core.self))
        if (missing.size > 0) {
          const entry: Pending = {
            sealed,
            tag: message._tag,
            tree,
            missing,
            members: missing.size,
            sentAt: core.now(),
            backlog
          }
          pending.set(sealed.envelope.sequence, entry)
          if (pending.size > config.maxPendingTrees) {
            const [oldest] = pending.keys()
            pending.delete(oldest!)
          }
          yield* FiberSet.run(
            fibers,
            watch(sealed.envelope.sequence, entry, repairDelay(tree, sealed.slot.length, rtt, backlog))
          )
        }
        return yield* receipt(core, sealed, outcome, "tree")
      })

    /** Receipts from `peer` for envelopes of this node. */
    const onReceipt = (peer: PeerId, sequences: ReadonlyArray<bigint>) => {
      for (const sequence of sequences) {
        const entry = pending.get(sequence)
        // Late, repeated or invented: ignored.
        if (entry === undefined || !entry.missing.delete(peer)) continue
        if (entry.missing.size === 0) {
          pending.delete(sequence)
          completed(core.now() - entry.sentAt, entry.backlog)
        }
      }
    }

    /** Whether trees failed so often lately that broadcasts should go direct for a while. */
    const fallingBack = (now: number) => now < fallbackUntil

    return {
      plan,
      send,
      rttOf: (tree: Tree) => highestRtt(tree.children(core.self)),
      onReceipt,
      fallingBack
    } satisfies TreeOrigin
  })

/** The tree of one broadcast, before it is sealed. */
export interface Plan {
  readonly sorted: ReadonlyArray<PeerId>
  readonly header: TreeHeader
  readonly tree: Tree
}

export interface TreeOrigin {
  readonly plan: (message: Message.Message, now: number, connected: ReadonlySet<PeerId>) => Plan
  readonly send: (
    message: Message.Message,
    encoded: Encoded,
    planned: Plan | undefined
  ) => Effect.Effect<BroadcastReceipt, InvalidOutbound>
  /** The highest smoothed RTT to the tree's first level, in milliseconds. */
  readonly rttOf: (tree: Tree) => Effect.Effect<number>
  readonly onReceipt: (peer: PeerId, sequences: ReadonlyArray<bigint>) => void
  readonly fallingBack: (now: number) => boolean
}
