// What the devnet parent and its validator processes say to each other over the IPC channel
// (JSON serialization: numbers, not bigints).
import type { NodeConfigInput } from "../NodeConfig.js"
import type { DriverStats } from "./driver.js"

/** Everything a validator process needs to start. */
export interface ValidatorSetup {
  readonly index: number
  readonly config: NodeConfigInput
  readonly payloadBytes: number
  readonly viewTimeoutMillis: number
  readonly minViewTimeMillis: number
  readonly statsIntervalMillis: number
}

/** One validator's counters at a moment of its Clock, with its view of its peers. */
export interface Snapshot extends DriverStats {
  /** Clock millis when taken. */
  readonly at: number
  /** Peers connected now. */
  readonly peersConnected: number
  /** Mean smoothed heartbeat RTT over connected peers, milliseconds; null before the first Pong. */
  readonly meanRtt: number | null
}

/**
 * The validator process's memory, CPU and handles at a moment (the soak test asks for it once a
 * minute, the footprint benchmark when the validator is up and after it idled).
 * Bytes as `process.memoryUsage()` reports them; `gc` says whether a full collection ran first (the
 * process was started with --expose-gc), so that `heapUsed` is what is retained, not garbage.
 */
export interface ProcessSample {
  /** Wall-clock millis when taken. */
  readonly at: number
  readonly gc: boolean
  readonly heapUsed: number
  readonly heapTotal: number
  readonly rss: number
  readonly external: number
  readonly arrayBuffers: number
  /**
   * Of `heapTotal`, V8's young generation (new space) as resident now: it grows up to 2 x 16 MiB
   * while modules load and shrinks only when a collection finds allocation slow.
   */
  readonly youngGeneration: number
  /** CPU time of the process since it started (`process.cpuUsage`), microseconds. */
  readonly cpuUserMicros: number
  readonly cpuSystemMicros: number
  /** Milliseconds since the process started (`process.uptime`). */
  readonly uptimeMillis: number
  /** Active handles, requests and timers keeping the event loop alive (`process.getActiveResourcesInfo`). */
  readonly handles: number
  /** The same, counted by kind (TCPSocketWrap, Timeout, ...). */
  readonly resources: Readonly<Record<string, number>>
}

export type ToValidator =
  | { readonly type: "start"; readonly setup: ValidatorSetup }
  /** Close the network cleanly and exit. */
  | { readonly type: "stop" }
  /** Answer with a `sample` of this process's memory, CPU and handles. */
  | { readonly type: "sample" }
  /** Answer with `stats` now (`run` answers it too when started with an IPC channel). */
  | { readonly type: "status" }

export type FromValidator =
  | { readonly type: "ready"; readonly peerId: string; readonly address: string }
  | { readonly type: "stats"; readonly snapshot: Snapshot }
  | { readonly type: "sample"; readonly sample: ProcessSample }
  /** Could not start, or stopped on an error; the process exits non-zero after it. */
  | { readonly type: "failed"; readonly message: string }
