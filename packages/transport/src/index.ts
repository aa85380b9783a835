/** The in-memory transport over the simulated network, for whole clusters under TestClock. */
export * as MemoryTransport from "./MemoryTransport.js"
/** QUIC with pinned Ed25519 certificates, a stream per channel (experimental). */
export * as QuicTransport from "./QuicTransport.js"
/** A deterministic, seeded network driven by Effect's Clock: latency, jitter, loss, bandwidth, partitions. */
export * as SimulatedNetwork from "./SimulatedNetwork.js"
/** Plain TCP with a signed handshake: trusted networks and benchmarks. */
export * as TcpTransport from "./TcpTransport.js"
/** TLS 1.3 with pinned Ed25519 certificates: the production layer. */
export * as TlsTransport from "./TlsTransport.js"
/** The contract: listen, dial, connections with prioritised channels. */
export * as Transport from "./Transport.js"
/** The public backend seam: plug a transport of your own under the same core and conformance suite. */
export * as TransportBackend from "./TransportBackend.js"
/** Every limit and channel, Schema-validated with defaults. */
export * as TransportConfig from "./TransportConfig.js"
/** Typed errors: dial failures, refusals, backpressure. */
export * as TransportError from "./TransportError.js"
