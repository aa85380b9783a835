/** Keeps one connection per validator: redial, heartbeats, rate limits, bans. */
export * as PeerManager from "./PeerManager.js"

/** Who this node knows: addresses, reputation, bans, RTT; persisted with a data directory. */
export * as PeerRegistry from "./PeerRegistry.js"

/** Every limit and weight, Schema-validated with defaults. */
export * as PeersConfig from "./PeersConfig.js"

/** Clock sleeps that share one timer per instant (cheap simulated clusters). */
export * as SharedSleep from "./SharedSleep.js"
