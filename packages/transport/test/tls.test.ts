import { TlsTransport } from "../src/index.js"
import { conformance } from "./fixtures/conformance.js"

conformance({
  name: "TlsTransport",
  clock: "live",
  layer: (identity, config) => TlsTransport.layer({ identity, config }),
  listenAddress: () => "127.0.0.1:0",
  provide: (effect) => effect
})
