// The ledger's typed errors (re-exported by Ledger.ts).
import * as Data from "effect/Data"

/** An append refused before anything was written: which height and why (not the next one, bad bytes). */
export class AppendRefused extends Data.TaggedError("AppendRefused")<{
  readonly height: bigint
  readonly reason: string
}> {
  override get message() {
    return `ledger refused the block at height ${this.height}: ${this.reason}`
  }
}

/**
 * The log holds something a crash cannot explain: a bad record with valid ones after it, a valid
 * record that breaks the chain, or not a ledger at all. Nothing was truncated; the operator decides
 * (restore the file, or cut it at `offset` by hand and let block sync fetch the rest).
 */
export class LedgerCorrupt extends Data.TaggedError("LedgerCorrupt")<{
  readonly file: string
  readonly offset: number
  readonly reason: string
}> {
  override get message() {
    return `ledger ${this.file} is corrupt at byte ${this.offset}: ${this.reason}`
  }
}

/** The file system failed us (or the ledger is closed, or unusable after an earlier failed write). */
export class LedgerIoError extends Data.TaggedError("LedgerIoError")<{
  readonly operation: string
  readonly file: string
  readonly cause: unknown
}> {
  override get message() {
    const cause = this.cause instanceof Error ? this.cause.message : String(this.cause)
    return `ledger ${this.operation} on ${this.file} failed: ${cause}`
  }
}

export type LedgerError = AppendRefused | LedgerCorrupt | LedgerIoError
