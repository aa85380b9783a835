/** The validator's network config: one Schema, from code, a JSON file and `HOTSTUFF2_*` env vars. */
export * as NodeConfig from "./NodeConfig.js"

/**
 * The network layer of a HotStuff-2 validator as one Effect layer: `NodeNetwork.layer(config)`,
 * `NodeNetwork.layerTest(config)`, and the service itself (`yield* NodeNetwork`).
 */
export {
  type BroadcastReceipt,
  type Inbound,
  type NetworkError,
  NodeNetwork,
  type NodeNetworkShape,
  type PeerEvent,
  type PeerStatus,
  type SendError,
  type SendOptions,
  StartFailed
} from "./NodeNetwork.js"

/**
 * Request/response between validators (block sync) with @effect/rpc over the sync channel:
 * `NodeRpc.layerServer(group)`, `NodeRpc.client(group, peer)`, `NodeRpc.peerOf(headers)`.
 */
export * as NodeRpc from "./NodeRpc.js"

/** A whole validator set on the simulated network, for testing a consensus app under TestClock. */
export * as TestCluster from "./TestCluster.js"
