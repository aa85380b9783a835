/** Benchmark reporting: JSON lines, medians, percentiles, the machine. */
export * as Bench from "./Bench.js"

/** Two-process benchmarks: a forked, pinned peer driven over IPC, always cleaned up. */
export * as BenchProcess from "./BenchProcess.js"
/** Raw node:tls / node:net baselines: the same frames, the same write coalescing. */
export * as RawSocket from "./RawSocket.js"
