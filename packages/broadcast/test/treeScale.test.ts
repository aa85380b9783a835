// The tree strategy at N = 100 under TestClock on the simulated network (latency, per-host
// upload): exactly once, no spurious repair. Its own file so that CI's second Node run can leave it
// out (the 100-node mesh costs tens of seconds of wall time); the 1,000-validator case is in the
// bench (bench/), outside the default test run.
import { assert, describe, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import { assertExactlyOnce } from "./fixtures/assertions.js"
import { advance, awaitMesh, onNetwork, proposal, setUploads, startCluster } from "./fixtures/cluster.js"

const LINK = { latency: 5 }
const UPLOAD = 50_000_000

describe("tree broadcast at scale", () => {
  it.scoped(
    "N = 100: each validator receives every broadcast once, from a relay, with no repair",
    () =>
      onNetwork(
        { seed: 9, defaults: LINK },
        Effect.gen(function* () {
          const { ids, nodes } = yield* startCluster({
            size: 100,
            broadcast: { strategy: "tree", uploadBytesPerSecond: UPLOAD }
          })
          yield* setUploads(ids, UPLOAD)
          yield* awaitMesh(nodes, "200 millis")
          const origin = nodes[0]!
          const sequences: Array<bigint> = []
          for (let view = 1n; view <= 3n; view++) {
            const receipt = yield* origin.broadcaster.broadcast(proposal(view, origin.id.peerId, 64 * 1024))
            assert.lengthOf(receipt.queued, 10, "default fanout ceil(sqrt(100))")
            sequences.push(receipt.sequence)
          }
          yield* advance(3000)
          assertExactlyOnce(nodes, origin, sequences)
          assert.strictEqual(origin.counts.repaired, 0)
          assert.strictEqual(
            nodes.reduce((sum, n) => sum + (n?.counts.relayed ?? 0), 0),
            3 * 89,
            "89 of the 99 reached through a relay, each time"
          )
        })
      ),
    180_000
  )
})
