// The devnet's consensus traffic driver on the simulated network under TestClock: views advance on
// every validator, and when a leader stops its views time out and the other three keep going.
import { assert, it } from "@effect/vitest"
import { SimulatedNetwork } from "@hotstuff2/transport"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as Scope from "effect/Scope"
import * as Driver from "../src/cli/driver.js"
import { NodeNetwork } from "../src/index.js"
import { configFor, identity, peerId } from "./fixtures/cluster.js"
import { waitSimulated } from "./fixtures/wait.js"

const addresses = [0, 1, 2, 3].map((n) => `v${n}:9000`)
const validators = [0, 1, 2, 3].map(peerId)

it("needs n - f votes for a certificate", () => {
  assert.deepStrictEqual([1, 2, 3, 4, 5, 7, 10, 100].map(Driver.quorum), [1, 2, 3, 3, 4, 5, 7, 67])
})

it.scoped(
  "four drivers advance views together; with a leader stopped the other three time out its views and go on",
  () =>
    Effect.gen(function* () {
      const network = yield* Layer.build(
        SimulatedNetwork.SimulatedNetwork.layer({ seed: 11, defaults: { latency: 5, jitter: 2 } })
      )
      const nodes = yield* Effect.forEach([0, 1, 2, 3], (n) =>
        Effect.gen(function* () {
          const scope = yield* Scope.make()
          const context = yield* Layer.buildWithScope(NodeNetwork.layerTest(configFor(n, addresses)), scope)
          const net = Context.get(context, NodeNetwork)
          const driver = yield* Driver.start(net, {
            validators,
            identity: identity(n),
            payloadBytes: 256,
            viewTimeout: "1 second",
            minViewTime: "20 millis",
            startTimeout: "10 seconds"
          }).pipe(Scope.extend(scope))
          return { driver, stop: Scope.close(scope, Exit.void) }
        }).pipe(Effect.provide(network))
      )
      const stats = Effect.forEach(nodes, (node) => node.driver.stats)
      const allAtLeast = (view: number, among = nodes) =>
        Effect.map(
          Effect.forEach(among, (node) => node.driver.stats),
          (all) => all.every((s) => s.view >= view)
        )

      yield* waitSimulated("view 20 on every validator", allAtLeast(20), { within: "120 seconds" })
      for (const s of yield* stats) {
        assert.strictEqual(s.rejected, 0)
        assert.isAbove(s.certificates, 0)
        assert.isAbove(s.proposalsReceived, 0)
      }

      // Validator 2 leads views 2, 6, 10...: each of them now ends in a timeout.
      yield* nodes[2]!.stop
      const survivors = [nodes[0]!, nodes[1]!, nodes[3]!]
      const before = yield* Effect.forEach(survivors, (node) => node.driver.stats)
      const from = Math.max(...before.map((s) => s.view))
      yield* waitSimulated("12 more views without validator 2", allAtLeast(from + 12, survivors), {
        within: "120 seconds"
      })
      const after = yield* Effect.forEach(survivors, (node) => node.driver.stats)
      for (const [i, s] of after.entries()) {
        assert.isAbove(s.timeouts, before[i]!.timeouts, `survivor ${i} timed out validator 2's views`)
        assert.isAbove(
          s.certificates + s.proposalsReceived,
          before[i]!.certificates + before[i]!.proposalsReceived
        )
      }
      yield* Effect.forEach(survivors, (node) => node.stop)
    })
)
