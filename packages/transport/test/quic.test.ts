import { QuicTransport } from "../src/index.js"
import { conformance } from "./fixtures/conformance.js"

conformance({
  name: "QuicTransport",
  clock: "live",
  layer: (identity, config) => QuicTransport.layer({ identity, config }),
  listenAddress: () => "127.0.0.1:0",
  provide: (effect) => effect
})
