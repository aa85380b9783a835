// Bootstrap nodes: entry points that need not be validators. While too few validators have an
// address (`bootstrapLeaveAt` of them), each entry point is dialled (by its key, or accepting the key
// it proves when none is configured); the new connection gets this node's record and a request for
// records, as every connection does. Once enough is known, an entry point that is not a validator
// is left. A failed dial is retried on a jittered exponential schedule on the Clock.
import type { PeerManager, PeerRegistry } from "@hotstuff2/peers"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Schedule from "effect/Schedule"
import type { BootstrapNode } from "../DiscoveryConfig.js"
import type { PeerId } from "./record.js"

export interface BootstrapCounters {
  dials: number
  failures: number
}

/** Keeps asking one entry point until enough is known; then leaves it unless it is a validator. */
export const run = (deps: {
  readonly node: BootstrapNode
  readonly local: PeerId
  readonly manager: PeerManager.PeerManagerShape
  readonly registry: PeerRegistry.PeerRegistryShape
  readonly enough: () => boolean
  readonly isValidator: (peer: PeerId) => boolean
  readonly counters: BootstrapCounters
}): Effect.Effect<void> =>
  Effect.gen(function* () {
    const { node, local, manager, registry, enough, isValidator, counters } = deps
    const schedule = yield* Schedule.driver(
      Schedule.exponential(Duration.seconds(1), 2).pipe(
        Schedule.jittered,
        Schedule.either(Schedule.spaced(Duration.seconds(60)))
      )
    )
    let peer: PeerId | undefined
    while (!enough()) {
      const connected = peer !== undefined && (yield* manager.connected).includes(peer)
      if (!connected) {
        counters.dials++
        const dialed = yield* Effect.either(
          manager.connectTo(node.address, node.peer ?? ((key: PeerId) => key !== local))
        )
        if (Either.isRight(dialed)) {
          peer = dialed.right
          yield* registry.addAddress(peer, node.address, "bootstrap")
        } else {
          counters.failures++
          yield* Effect.logDebug(`bootstrap ${node.address}: ${dialed.left.message}`)
        }
      }
      yield* Effect.orElse(schedule.next(undefined), () => Effect.void)
    }
    if (peer !== undefined && !isValidator(peer)) yield* manager.disconnect(peer, "bootstrap-done")
  })
