// The acceptance scenario over real TLS on 127.0.0.1, through the public API only.
import { it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import { NodeNetwork } from "../src/index.js"
import { reservePorts } from "../src/internal/ports.js"
import { configFor, OUTSIDER_SEED, startNode } from "./fixtures/cluster.js"
import { run } from "./fixtures/scenario.js"
import { waitLive } from "./fixtures/wait.js"

it.scopedLive(
  "four validators over TLS: mesh, broadcast once with origin, send to one, outsider refused, stop and return",
  () =>
    Effect.gen(function* () {
      const ports = yield* reservePorts(5)
      const addresses = ports.slice(0, 4).map((p) => `127.0.0.1:${p}`)
      yield* run({
        start: (n) => startNode(n, NodeNetwork.layer(configFor(n, addresses))),
        startOutsider: startNode(
          99,
          NodeNetwork.layer({
            ...configFor(0, addresses),
            identity: { seed: OUTSIDER_SEED },
            listen: `127.0.0.1:${ports[4]}`
          })
        ),
        waitUntil: waitLive
      })
    }),
  60_000
)
