import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import { MemoryTransport, SimulatedNetwork } from "../src/index.js"
import { conformance } from "./fixtures/conformance.js"
import { identity } from "./fixtures/identities.js"

conformance<SimulatedNetwork.SimulatedNetwork>({
  name: "MemoryTransport",
  clock: "test",
  layer: (id, config) => MemoryTransport.layer({ identity: id, config }),
  listenAddress: (n) => `${MemoryTransport.hostOf(identity(n).peerId)}:0`,
  // Built in the test's scope before the transports, so it is released after them.
  provide: (effect) =>
    Effect.flatMap(Layer.build(SimulatedNetwork.SimulatedNetwork.layer({ seed: 7 })), (context) =>
      Effect.provide(effect, context)
    )
})
