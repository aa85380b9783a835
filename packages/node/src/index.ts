/** The validator's network config: one Schema, from code, a JSON file and `HOTSTUFF2_*` env vars. */
export * as NodeConfig from "./NodeConfig.js"

/** The network layer of a HotStuff-2 validator as one Effect layer. */
export * as NodeNetwork from "./NodeNetwork.js"
