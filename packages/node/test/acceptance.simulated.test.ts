// The same acceptance scenario on the simulated network under TestClock, through `layerTest`.
import { it } from "@effect/vitest"
import { SimulatedNetwork } from "@hotstuff2/transport"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import { NodeNetwork } from "../src/index.js"
import { configFor, OUTSIDER_SEED, startNode } from "./fixtures/cluster.js"
import { run } from "./fixtures/scenario.js"
import { waitSimulated } from "./fixtures/wait.js"

const addresses = [0, 1, 2, 3].map((n) => `v${n}:9000`)

it.scoped("four validators under TestClock: the same scenario through NodeNetwork.layerTest", () =>
  Effect.gen(function* () {
    // The network is built first, so that it outlives every node started inside.
    const network = yield* Layer.build(
      SimulatedNetwork.SimulatedNetwork.layer({ seed: 7, defaults: { latency: 5, jitter: 2 } })
    )
    const provide = Effect.provide(network)
    yield* run({
      start: (n) => provide(startNode(n, NodeNetwork.layerTest(configFor(n, addresses)))),
      startOutsider: provide(
        startNode(
          99,
          NodeNetwork.layerTest({
            ...configFor(0, addresses),
            identity: { seed: OUTSIDER_SEED },
            listen: "outsider:9000"
          })
        )
      ),
      waitUntil: waitSimulated
    })
  })
)
