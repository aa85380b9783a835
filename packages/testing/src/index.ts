/** Benchmark reporting: JSON lines, medians, percentiles, the machine. */
export * as Bench from "./Bench.js"

/** Two-process benchmarks: a forked, pinned peer driven over IPC, always cleaned up. */
export * as BenchProcess from "./BenchProcess.js"
/** A real DNS server on 127.0.0.1 (UDP and TCP, one port) answering SRV, A and AAAA from a table. */
export * as DnsServer from "./DnsServer.js"
/** The fuzz engine: random and mutated inputs for a decoder, crashes and allocations, seeded. */
export * as Fuzz from "./Fuzz.js"
/** An OTLP/HTTP receiver on 127.0.0.1 for telemetry tests: the spans and metrics exporters sent it. */
export * as OtlpReceiver from "./OtlpReceiver.js"
/** Raw node:tls / node:net baselines: the same frames, the same write coalescing. */
export * as RawSocket from "./RawSocket.js"
