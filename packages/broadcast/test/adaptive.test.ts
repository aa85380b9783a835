// The adaptive rule on its own (adaptive.ts), and on a 16-validator cluster: small messages go
// direct, large ones take a tree, and trees that keep needing repairs make it fall back to direct.
import { assert, describe, it } from "@effect/vitest"
import { SimulatedNetwork } from "@hotstuff2/transport"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as BroadcastConfig from "../src/BroadcastConfig.js"
import { choose, levels } from "../src/internal/adaptive.js"
import { Tree } from "../src/internal/tree/layout.js"
import {
  advance,
  awaitMesh,
  hostOf,
  key,
  NETWORK,
  onNetwork,
  proposal,
  startCluster
} from "./fixtures/cluster.js"

const config = Either.getOrThrow(BroadcastConfig.decode({ strategy: "adaptive" }))
const base = { recipients: 999, size: 256 * 1024, fanout: 32, rtt: 100, fallingBack: false }

describe("adaptive rule", () => {
  it("counts the levels of a tree", () => {
    assert.strictEqual(levels(15, 4), 2)
    assert.strictEqual(levels(4, 4), 1)
    assert.strictEqual(levels(99, 10), 2)
    assert.strictEqual(levels(999, 32), 2)
    assert.strictEqual(levels(1000, 10), 3)
    assert.strictEqual(levels(0, 4), 0)
  })

  it("takes a tree for a large message to a large set, and says why it does not otherwise", () => {
    const large = choose(config, base)
    assert.strictEqual(large.strategy, "tree")
    // 999 copies of 256 KiB at 1 Gbit/s and half an RTT: 2.15 s; two levels of 32 copies and half an RTT each: 0.23 s.
    assert.closeTo(large.direct!, 2145, 5)
    assert.closeTo(large.tree!, 234, 5)
    assert.deepStrictEqual(choose(config, { ...base, recipients: 20 }), {
      strategy: "direct",
      why: "small-set"
    })
    assert.deepStrictEqual(choose(config, { ...base, size: 1024 }), {
      strategy: "direct",
      why: "small-message"
    })
    assert.deepStrictEqual(choose(config, { ...base, fallingBack: true }), {
      strategy: "direct",
      why: "fallback"
    })
    // A slow network makes each extra hop dear: with a 4 s RTT two levels lose to one upload of 999 copies.
    assert.strictEqual(choose(config, { ...base, rtt: 4000 }).strategy, "direct")
  })
})

describe("adaptive strategy on a cluster", () => {
  it.scoped(
    "N = 16: direct for small messages, tree for large ones; falls back to direct after trees keep needing repair",
    () =>
      onNetwork(
        { seed: 8, defaults: { latency: 5 } },
        Effect.gen(function* () {
          const all = Array.from({ length: 16 }, (_, i) => key(i + 1))
          // Three of the four relays of view 1 drop what they should forward, and are never demoted.
          const droppers = Tree.make({
            members: all.map((id) => id.peerId),
            origin: all[0]!.peerId,
            networkId: NETWORK,
            epoch: 0n,
            round: 1n,
            fanout: 4
          })
            .children(all[0]!.peerId)
            .slice(0, 3)
          const { ids, nodes } = yield* startCluster({
            size: 16,
            broadcast: {
              strategy: "adaptive",
              fanout: 4,
              treeMinValidators: 8,
              treeMinBytes: 4096,
              uploadBytesPerSecond: 5_000_000,
              relayFailuresToDemote: 1000
            },
            faults: new Map(
              droppers.map((peer) => [all.findIndex((id) => id.peerId === peer), "drop-relayed" as const])
            )
          })
          const network = yield* SimulatedNetwork.SimulatedNetwork
          for (const id of ids) yield* network.setUpload(hostOf(id), 5_000_000)
          yield* awaitMesh(nodes)
          const origin = nodes[0]!
          const small = yield* origin.broadcaster.broadcast(proposal(1n, origin.id.peerId, 512))
          assert.strictEqual(small.strategy, "direct")
          yield* advance(1000)
          const strategies: Array<string> = []
          for (let i = 0; i < 10; i++) {
            const receipt = yield* origin.broadcaster.broadcast(
              proposal(1n, origin.id.peerId, 32 * 1024, i + 1)
            )
            strategies.push(receipt.strategy)
            yield* advance(4000)
          }
          // Eight trees, each leaving over a quarter of the validators to repair, then direct.
          assert.deepStrictEqual(strategies, [...Array(8).fill("tree"), "direct", "direct"])
          assert.deepStrictEqual(origin.counts.chose, ["direct", ...strategies])
          for (const [i, node] of nodes.entries()) {
            if (node === undefined || i === 0) continue
            assert.lengthOf(node.delivered, 11, `node ${i} got all 11 broadcasts`)
          }
        })
      ),
    60_000
  )
})
