// Reading the ledger's log at open: every record's checksums, then the chain; a torn tail is found
// (and cut by the caller), damage before the end is refused.
import * as fs from "node:fs"
import * as Either from "effect/Either"
import {
  bodyMatches,
  decodeLink,
  headerLength,
  LOG_MAGIC,
  MIN_BODY_BYTES,
  RECORD_HEADER_BYTES
} from "./ledgerCodec.js"
import { LedgerCorrupt } from "./ledgerErrors.js"

/** Bytes read at a time while scanning the log at open. */
const SCAN_CHUNK_BYTES = 4 * 1024 * 1024

/** Positioned reads over a file, a chunk at a time; views stay valid (each chunk is a new buffer). */
class Chunks {
  private buf = Buffer.alloc(0)
  private start = 0
  constructor(
    private readonly fd: number,
    readonly size: number
  ) {}

  /** Bytes [offset, offset + n); the caller keeps offset + n within the file. */
  get(offset: number, n: number): Buffer {
    if (offset < this.start || offset + n > this.start + this.buf.length) {
      this.buf = Buffer.allocUnsafe(Math.min(Math.max(n, SCAN_CHUNK_BYTES), this.size - offset))
      this.start = offset
      readFully(this.fd, this.buf, offset)
    }
    return this.buf.subarray(offset - this.start, offset - this.start + n)
  }
}

export const readFully = (fd: number, into: Buffer, position: number): void => {
  let done = 0
  while (done < into.length) {
    const n = fs.readSync(fd, into, done, into.length - done, position + done)
    if (n === 0) throw new Error(`unexpected end of file at byte ${position + done}`)
    done += n
  }
}

/** A record that is not whole and valid: why, and where a valid record after it could start. */
interface Problem {
  readonly reason: string
  /**
   * The declared end of the record when its header is sound (its body, which holds a payload any
   * leader chose, is never searched for records), else the next byte.
   */
  readonly resumeAt: number
}

/** The body length of the record at `at`, or its problem. */
const recordProblem = (chunks: Chunks, at: number): number | Problem => {
  const remaining = chunks.size - at
  if (remaining < RECORD_HEADER_BYTES)
    return { reason: `a partial record header (${remaining} bytes)`, resumeAt: chunks.size }
  const length = headerLength(chunks.get(at, RECORD_HEADER_BYTES), 0)
  if (length === undefined) return { reason: "a record header whose checksum fails", resumeAt: at + 1 }
  const resumeAt = at + RECORD_HEADER_BYTES + length
  if (remaining - RECORD_HEADER_BYTES < length) {
    return {
      reason: `a partial record (${remaining - RECORD_HEADER_BYTES} of ${length} body bytes)`,
      resumeAt
    }
  }
  const header = Buffer.from(chunks.get(at, RECORD_HEADER_BYTES))
  return bodyMatches(header, 0, chunks.get(at + RECORD_HEADER_BYTES, length))
    ? length
    : { reason: "a record whose checksum fails", resumeAt }
}

/** The offset of the first whole, valid record at or after `from`, if any. */
const findValidRecord = (chunks: Chunks, from: number): number | undefined => {
  for (let at = from; at + RECORD_HEADER_BYTES + MIN_BODY_BYTES <= chunks.size; at++) {
    if (typeof recordProblem(chunks, at) === "number") return at
  }
  return undefined
}

/** What opening the ledger had to repair. */
export interface Recovered {
  /** Bytes cut from the end of the log: a torn last append (0 after a clean stop). */
  readonly truncatedBytes: number
  /** Why they were cut (the first bad record's fault), when any were. */
  readonly reason: string | undefined
}

export interface Scanned {
  readonly offsets: Array<number>
  readonly end: number
  readonly recovered: Recovered
}

/**
 * Reads the whole log: checksums, then the chain. A bad record with nothing valid after it is a torn
 * append (the crash came before its fsync, so no caller was told it was durable) and is cut; one with
 * a valid record after it is damage to acknowledged data, an error.
 */
export const scan = (
  fd: number,
  size: number,
  file: string,
  firstHeight: bigint
): Scanned | LedgerCorrupt => {
  const chunks = new Chunks(fd, size)
  const offsets: Array<number> = []
  let previous: { hash: Buffer; height: bigint } | undefined
  let at = LOG_MAGIC.length
  while (at < size) {
    const length = recordProblem(chunks, at)
    if (typeof length !== "number") {
      const next = findValidRecord(chunks, length.resumeAt)
      if (next !== undefined) {
        return new LedgerCorrupt({
          file,
          offset: at,
          reason: `${length.reason} after height ${previous?.height ?? "none"}, yet a valid record follows at byte ${next}`
        })
      }
      return { offsets, end: at, recovered: { truncatedBytes: size - at, reason: length.reason } }
    }
    const link = decodeLink(chunks.get(at + RECORD_HEADER_BYTES, length))
    if (Either.isLeft(link)) return new LedgerCorrupt({ file, offset: at, reason: link.left })
    const { hash, parent, height } = link.right
    const expected = previous === undefined ? firstHeight : previous.height + 1n
    if (height !== expected) {
      return new LedgerCorrupt({
        file,
        offset: at,
        reason: `a record at height ${height} where ${expected} belongs`
      })
    }
    if (previous !== undefined && !previous.hash.equals(parent)) {
      return new LedgerCorrupt({
        file,
        offset: at,
        reason: `the block at height ${height} is not the child of the one before`
      })
    }
    previous = { hash: Buffer.from(hash), height }
    offsets.push(at)
    at += RECORD_HEADER_BYTES + length
  }
  return { offsets, end: at, recovered: { truncatedBytes: 0, reason: undefined } }
}
