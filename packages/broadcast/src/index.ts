/** Every broadcast limit, Schema-validated with defaults. */
export * as BroadcastConfig from "./BroadcastConfig.js"

/** One-to-many: signed envelopes to every validator or a subset, verified and deduplicated on receipt. */
export * as Broadcaster from "./Broadcaster.js"
