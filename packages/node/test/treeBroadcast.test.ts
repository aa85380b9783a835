// Tree broadcast through NodeNetwork (TestCluster, TestClock, simulated network): the config's
// strategy and a per-broadcast one, the trees drawn over the newest epoch's set, exactly once.
import { assert, describe, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Stream from "effect/Stream"
import * as TestClock from "effect/TestClock"
import type { NodeNetwork } from "../src/index.js"
import * as TestCluster from "../src/TestCluster.js"
import { proposal, vote } from "./fixtures/cluster.js"

describe("NodeNetwork tree broadcast", () => {
  it.scoped(
    "12 validators: every one gets each tree broadcast once; a new epoch's set gets the next trees",
    () =>
      Effect.gen(function* () {
        const cluster = yield* TestCluster.make({
          size: 12,
          seed: 11,
          config: { broadcast: { strategy: "adaptive", fanout: 3, treeMinValidators: 64 } }
        })
        const id = (i: number) => cluster.validators[i]!.identity.peerId
        const got: Array<Array<NodeNetwork.Inbound>> = Array.from({ length: 12 }, () => [])
        for (let i = 0; i < 12; i++) {
          yield* Effect.forkScoped(
            Stream.runForEach(cluster.node(i).messages, (m) => Effect.sync(() => got[i]!.push(m)))
          )
        }
        yield* TestClock.adjust("10 seconds")
        const zero = cluster.node(0)
        // Adaptive with 12 < treeMinValidators: direct. Asked for a tree: a tree.
        const direct = yield* zero.broadcast(proposal(1n, id(0), 32 * 1024))
        assert.strictEqual(direct.strategy, "direct")
        assert.lengthOf(direct.queued, 11)
        const tree = yield* zero.broadcast(proposal(2n, id(0), 32 * 1024), { strategy: "tree" })
        assert.strictEqual(tree.strategy, "tree")
        assert.lengthOf(tree.queued, 3, "the root's three children")
        yield* TestClock.adjust("2 seconds")
        for (let i = 1; i < 12; i++) {
          assert.deepStrictEqual(
            got[i]!.map((m) => m.origin === id(0) && m.message._tag),
            ["Proposal", "Proposal"],
            `node ${i} got both broadcasts, once each`
          )
        }

        // Epoch 1: validators 0..8. Trees are drawn over them; 9, 10 and 11 are not in it.
        const next = [0, 1, 2, 3, 4, 5, 6, 7, 8].map((i) => ({
          id: id(i),
          addresses: [cluster.validators[i]!.address]
        }))
        for (let i = 0; i < 12; i++) yield* cluster.node(i).updateValidators(1n, next)
        yield* TestClock.adjust("1 seconds")
        const third = yield* zero.broadcast(vote(3n, id(0)), { strategy: "tree" })
        assert.strictEqual(third.strategy, "tree")
        yield* TestClock.adjust("2 seconds")
        for (let i = 1; i < 12; i++) {
          const votes = got[i]!.filter((m) => m.message._tag === "Vote")
          assert.lengthOf(votes, i <= 8 ? 1 : 0, `node ${i} ${i <= 8 ? "in" : "outside"} epoch 1`)
        }
      }),
    120_000
  )
})
