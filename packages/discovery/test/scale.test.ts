// 100 validators under TestClock on the simulated network that know the set by key only, and two
// entry points, reach the full validator mesh through bootstrap and gossip.
import { assert, describe, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as TestClock from "effect/TestClock"
import { fullMesh, startBootstrapped, withNetwork } from "./fixtures/cluster.js"

describe("discovery at 100 validators", () => {
  it.scoped(
    "100 nodes that know only 2 bootstrap nodes reach the full validator mesh",
    () =>
      withNetwork(
        { seed: 100, defaults: { latency: 20 } },
        Effect.gen(function* () {
          const { ns, nodes } = yield* startBootstrapped(100, {
            discovery: { gossipInterval: "10 seconds" },
            peers: { heartbeatInterval: "5 seconds" }
          })
          let seconds = 0
          let meshed = false
          while (!meshed && seconds < 300) {
            yield* TestClock.adjust("5 seconds")
            seconds += 5
            meshed = yield* fullMesh(nodes, ns)
          }
          assert.isTrue(meshed, `the mesh formed within 300 s of simulated time (${seconds} s)`)
          for (const node of nodes) {
            assert.strictEqual((yield* node.discovery.stats).validatorsWithAddress, ns.length - 1)
          }
        })
      ),
    600_000
  )
})
