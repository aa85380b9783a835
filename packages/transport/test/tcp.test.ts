import { TcpTransport } from "../src/index.js"
import { conformance } from "./fixtures/conformance.js"

conformance({
  name: "TcpTransport",
  clock: "live",
  layer: (identity, config) => TcpTransport.layer({ identity, config, allowUnencrypted: true }),
  listenAddress: () => "127.0.0.1:0",
  provide: (effect) => effect
})
