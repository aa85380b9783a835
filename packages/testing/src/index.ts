/** Benchmark reporting: JSON lines, medians, percentiles, the machine. */
export * as Bench from "./Bench.js"
