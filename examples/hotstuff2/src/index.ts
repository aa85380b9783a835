/** The validator: the consensus loop on `NodeNetwork` (`Consensus`, `layer`, `make`, `Status`). */

/** The HotStuff-2 core as a pure state machine, and its inputs and outputs. */
export * as Replica from "./core/Replica.js"
export type * from "./core/types.js"
/** Committed blocks on disk, and the safety state. */
export * as Ledger from "./Ledger.js"
export * as SafetyStore from "./SafetyStore.js"
/** Block sync over `@effect/rpc` on the sync channel (`SyncRpcs`, `GetChain`). */
export * as Sync from "./Sync.js"
export * as Validator from "./Validator.js"
