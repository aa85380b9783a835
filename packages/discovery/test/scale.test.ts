// 100 validators under TestClock on the simulated network that know the set by key only, and two
// entry points, reach the full validator mesh through bootstrap and gossip.
import { assert, describe, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as TestClock from "effect/TestClock"
import { address, fullMesh, id, keysOnly, type Node, startNode, withNetwork } from "./fixtures/cluster.js"

describe("discovery at 100 validators", () => {
  it.scoped(
    "100 nodes that know only 2 bootstrap nodes reach the full validator mesh",
    () =>
      withNetwork(
        { seed: 100, defaults: { latency: 20 } },
        Effect.gen(function* () {
          const ns = Array.from({ length: Number(process.env.SCALE_N ?? 100) }, (_, i) => i + 1)
          const bootstrap = [{ address: address(1), peer: id(1) }, { address: address(2) }]
          const nodes: Array<Node> = []
          for (const n of ns) {
            nodes.push(
              yield* startNode({
                n,
                validators: keysOnly(ns),
                discovery: { bootstrap: n <= 2 ? [] : bootstrap, gossipInterval: "10 seconds" },
                peers: { heartbeatInterval: "5 seconds" }
              })
            )
          }
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
