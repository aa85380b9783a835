// The adaptive strategy's rule: per broadcast, direct or tree, whichever is expected to put the
// message at the last validator first. Direct: the origin uploads n copies, then half an RTT.
// Tree: per level, a node uploads `fanout` copies, then half an RTT, and verifies before relaying.
// Small sets and small messages always go direct (their copies cost little upload and a tree adds
// hops), and so does everything while recent trees kept needing repairs (the origin's fallback).
import type * as BroadcastConfig from "../BroadcastConfig.js"

/** Levels of a tree of `recipients` below the root with `fanout` children per node. */
export const levels = (recipients: number, fanout: number): number => {
  let depth = 0
  let reached = 0
  let width = 1
  while (reached < recipients) {
    width *= fanout
    reached += width
    depth++
  }
  return depth
}

export interface Conditions {
  /** Validators to reach, this node left out. */
  readonly recipients: number
  /** The slot's bytes. */
  readonly size: number
  readonly fanout: number
  /** The highest smoothed RTT to the tree's first level, in milliseconds. */
  readonly rtt: number
  /** Trees failed lately (the origin's fallback is on). */
  readonly fallingBack: boolean
}

export type Choice = {
  readonly strategy: "direct" | "tree"
  readonly why: "small-set" | "small-message" | "fallback" | "estimate"
  /** Estimated milliseconds to the last validator, for each strategy (when estimated). */
  readonly direct?: number
  readonly tree?: number
}

/** The rule (README, "Adaptive strategy"). */
export const choose = (config: BroadcastConfig.BroadcastConfig, c: Conditions): Choice => {
  if (c.recipients + 1 < config.treeMinValidators) return { strategy: "direct", why: "small-set" }
  if (c.size < config.treeMinBytes) return { strategy: "direct", why: "small-message" }
  if (c.fallingBack) return { strategy: "direct", why: "fallback" }
  const copy = (c.size * 1000) / config.uploadBytesPerSecond
  const direct = c.recipients * copy + c.rtt / 2
  const tree = levels(c.recipients, c.fanout) * (c.fanout * copy + c.rtt / 2)
  return { strategy: tree < direct ? "tree" : "direct", why: "estimate", direct, tree }
}
