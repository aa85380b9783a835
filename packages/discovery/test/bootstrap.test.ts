// Bootstrap and gossip under TestClock on the simulated network: nodes that know the validators by key
// only, and where two entry points are, find every validator and form the full mesh.
import { assert, describe, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as TestClock from "effect/TestClock"
import { address, fullMesh, id, keysOnly, type Node, startNode, withNetwork } from "./fixtures/cluster.js"

const range = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, i) => from + i)

/** Advances the clock a second at a time until `done`, at most `seconds`; returns the seconds taken. */
const until = (done: Effect.Effect<boolean>, seconds: number) =>
  Effect.gen(function* () {
    for (let s = 1; s <= seconds; s++) {
      yield* TestClock.adjust("1 second")
      if (yield* done) return s
    }
    return -1
  })

describe("bootstrap and gossip", () => {
  it.scoped(
    "12 validators that know only two entry points (one by key, one by address alone) form the full mesh",
    () =>
      withNetwork(
        { seed: 7 },
        Effect.gen(function* () {
          const ns = range(1, 12)
          const bootstrap = [{ address: address(1), peer: id(1) }, { address: address(2) }]
          const nodes: Array<Node> = []
          for (const n of ns) {
            nodes.push(
              yield* startNode({
                n,
                validators: keysOnly(ns),
                discovery: { bootstrap: n <= 2 ? [] : bootstrap }
              })
            )
          }
          const seconds = yield* until(fullMesh(nodes, ns), 120)
          assert.isAbove(seconds, 0, "the mesh formed")
          // A record pushed on a connection that then lost the duplicate tie-break is lost with it:
          // gossip rounds (every 5 s here) fill such gaps.
          yield* TestClock.adjust("30 seconds")
          for (const node of nodes) {
            const stats = yield* node.discovery.stats
            const states = yield* node.registry.all
            const missing = states
              .filter((s) => s.validator && s.addresses.length === 0)
              .map((s) => s.id.slice(0, 6))
            assert.strictEqual(
              stats.validatorsWithAddress,
              11,
              `node ${node.n}: ${JSON.stringify(stats)} missing ${missing}`
            )
          }
        })
      )
  )
})
