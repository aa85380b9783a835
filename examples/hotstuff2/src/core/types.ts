/**
 * The consensus core's inputs and outputs. The core (`Replica.ts`) is a pure state machine: the
 * driver (`Validator.ts`) feeds it what happened (a message, a timer, synced blocks) with the Clock's
 * time and carries out what it says, in order (persist the safety state before sending the vote it
 * guards, send, broadcast, arm a timer, append to the ledger, fetch missing blocks). No I/O, no
 * Clock and no randomness inside: the same inputs give the same outputs on every validator.
 */
import type { Identity, Message } from "@hotstuff2/wire"

export type PeerId = Identity.PeerId
export type Block = Message.Block
export type QuorumCertificate = Message.QuorumCertificate
export type TimeoutCertificate = Message.TimeoutCertificate

/** The messages the protocol exchanges (wire types; no extension was needed). */
export type ConsensusMessage =
  | Message.Proposal
  | Message.Vote
  | Message.Timeout
  | Message.TimeoutCertificate
  | Message.NewView

/**
 * A block with the certificate its proposal carried (`justify` certifies `block.parent`): what the
 * block tree holds, what block sync returns and what the ledger stores beside the certificate of the
 * block itself.
 */
export interface JustifiedBlock {
  readonly block: Block
  readonly justify: QuorumCertificate
}

/** A committed block as the ledger keeps it: the block, its parent's certificate and its own. */
export interface CommittedBlock extends JustifiedBlock {
  /** A certificate for `block` itself (the justify of the child that committed it, or a later one). */
  readonly certificate: QuorumCertificate
}

/**
 * What must reach disk before a vote or timeout leaves: a validator that restarts with less could
 * vote twice in a view or against its lock.
 */
export interface SafetyState {
  /** The highest view this validator voted in (0 before any vote). */
  readonly lastVoted: bigint
  /** The highest view this validator sent a Timeout for. */
  readonly lastTimedOut: bigint
  /** The lock: the highest quorum certificate seen. */
  readonly locked: QuorumCertificate
}

export interface CoreConfig {
  /** Separates this network's signatures from any other's (the NodeNetwork networkId). */
  readonly networkId: string
  /** The validator set in signer-bit order; the leader of view v is `validators[v mod n]`. */
  readonly validators: ReadonlyArray<PeerId>
  readonly identity: Identity.Identity
  /** The view timer after progress, milliseconds. */
  readonly baseTimeout: number
  /** The view timer doubles on each consecutive failed view, up to this, milliseconds. */
  readonly maxTimeout: number
  /** Messages for views more than this far ahead of ours are refused (bounds every view-keyed map). */
  readonly viewWindow: number
  /** The block body the leader proposes in `view` at `height` (deterministic in a test). */
  readonly payload: (view: bigint, height: bigint) => Uint8Array
  /** Largest block body accepted from a leader or a sync response, bytes. */
  readonly maxPayloadBytes: number
}

/** Where a restarted validator resumes: its ledger's last block and its persisted safety state. */
export interface Resume {
  readonly committed: CommittedBlock | undefined
  readonly safety: SafetyState | undefined
}

export type Input =
  | { readonly _tag: "Start"; readonly now: number; readonly resume: Resume }
  | {
      readonly _tag: "Received"
      readonly now: number
      /** The connection's peer (authenticated by the transport). */
      readonly from: PeerId
      readonly message: ConsensusMessage
    }
  | { readonly _tag: "TimerFired"; readonly now: number; readonly view: bigint }
  /**
   * The answer to a `Fetch`: blocks in ascending height, each one's parent the one before it, the
   * first one's parent known, the last one's hash the fetch's target. Verified like proposals are.
   */
  | {
      readonly _tag: "Synced"
      readonly now: number
      readonly from: PeerId
      readonly blocks: ReadonlyArray<JustifiedBlock>
    }

export type Output =
  /** Write durably before carrying out any output after this one. */
  | { readonly _tag: "PersistSafety"; readonly safety: SafetyState }
  | {
      readonly _tag: "Broadcast"
      readonly message: Message.Proposal | Message.Timeout | Message.TimeoutCertificate
    }
  | { readonly _tag: "Send"; readonly to: PeerId; readonly message: Message.Vote | Message.NewView }
  /** Append to the ledger, in order: each block's parent is the previous committed block. */
  | { readonly _tag: "Commit"; readonly blocks: ReadonlyArray<CommittedBlock> }
  /** Arm the view timer (replacing any earlier one): fire `TimerFired(view)` after `after` ms. */
  | { readonly _tag: "SetTimer"; readonly view: bigint; readonly after: number }
  /**
   * Blocks are missing between our committed height and a certified block: ask `hint` (then others)
   * for the chain ending at `target`, from `fromHeight`, and feed the answer back as `Synced`.
   */
  | {
      readonly _tag: "Fetch"
      readonly target: { readonly hash: Uint8Array; readonly height: bigint }
      readonly fromHeight: bigint
      readonly hint: PeerId
    }
  /** A message refused: what and why (the driver counts it and may report the peer). */
  | { readonly _tag: "Refused"; readonly from: PeerId; readonly what: string; readonly reason: string }
  /** Observability: the view changed, because of a certificate, a timeout certificate or sync. */
  | { readonly _tag: "EnteredView"; readonly view: bigint; readonly via: "qc" | "tc" | "start" }
  | { readonly _tag: "Proposed"; readonly proposal: Message.Proposal }
  | { readonly _tag: "Voted"; readonly vote: Message.Vote }
  | { readonly _tag: "Certified"; readonly certificate: QuorumCertificate }
