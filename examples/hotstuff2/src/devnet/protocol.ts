// What the devnet parent and its validator processes say to each other over the IPC channel. The
// channel uses Node's "advanced" serialization (structured clone), so a `Status` keeps its bigints.
import type { NodeConfig } from "@hotstuff2/node"
import type { Status } from "../Validator.js"

/** Everything a validator process needs to start: its network config and its consensus options. */
export interface ValidatorSetup {
  readonly index: number
  /** The `NodeNetwork` config; its identity is `{ keyFile }`, the key the consensus signs with too. */
  readonly config: NodeConfig.NodeConfigInput
  /** The key file the config names (PKCS#8 PEM, 0600). */
  readonly keyFile: string
  /** Ledger and safety state (`ledger/`, `safety`); the network's own state is in `network/` beside them. */
  readonly dataDirectory: string
  readonly networkId: string
  /** Bytes of each proposed block body. */
  readonly payloadBytes: number
  /** The view timer after progress, ms. */
  readonly baseTimeout: number
  /** How often the process reports its `Status`, ms. */
  readonly statusInterval: number
}

/** One validator's `Status` at a moment of its wall clock. */
export interface StatusReport {
  /** `Date.now()` when taken, ms. */
  readonly at: number
  readonly status: Status
}

export type ToValidator =
  | { readonly type: "start"; readonly setup: ValidatorSetup }
  /** Close the consensus and the network cleanly, report a last status and exit 0. */
  | { readonly type: "stop" }

export type FromValidator =
  | { readonly type: "ready"; readonly peerId: string; readonly address: string }
  | { readonly type: "status"; readonly report: StatusReport }
  /** Could not start, or stopped on an error; the process exits non-zero after it. */
  | { readonly type: "failed"; readonly message: string }
