// A validator's state in numbers: its driver's counters and its view of its peers.
import * as Clock from "effect/Clock"
import * as Effect from "effect/Effect"
import type { NodeNetworkShape } from "../NodeNetwork.js"
import { type Driver, noCounters } from "./driver.js"
import type { Snapshot } from "./protocol.js"

const idle: Driver = { stats: Effect.succeed({ view: 0, ...noCounters() }) }

/** Counters now; without a driver they are all zero. */
export const snapshot = (net: NodeNetworkShape, driver: Driver = idle): Effect.Effect<Snapshot> =>
  Effect.gen(function* () {
    const stats = yield* driver.stats
    // Validators only: the status line reads "n/m peers connected" against the validator set.
    const peers = (yield* net.peers).filter((p) => p.validator && p.state === "connected")
    const rtts = peers.flatMap((p) => (p.rtt === undefined ? [] : [p.rtt]))
    return {
      ...stats,
      at: yield* Clock.currentTimeMillis,
      peersConnected: peers.length,
      meanRtt: rtts.length === 0 ? null : rtts.reduce((a, b) => a + b, 0) / rtts.length
    }
  })
