/** Benchmark reporting: JSON lines, medians, percentiles, the machine. */
export * as Bench from "./Bench.js"
/** Raw node:tls / node:net baselines: the same frames, the same write coalescing. */
export * as RawSocket from "./RawSocket.js"
