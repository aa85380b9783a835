/**
 * The committed chain on disk: an append-only log of `CommittedBlock`s under
 * `<dataDirectory>/ledger/blocks.log`, each one the next height after the last and the child of its
 * block. A block the driver appends is on disk (written and `fdatasync`ed) before `append` succeeds,
 * so a validator never says it committed what a crash could take back. One file, no segments: the
 * whole log is scanned once at open, and the app never deletes old blocks.
 *
 * The format (internal/ledgerCodec.ts): an 8-byte file header ("hs2ledg", version 1), then records of
 * `u32 length | u32 crc32(body) | u32 crc32(length, crc) | body`, body = version, block hash, parent,
 * height, payload, and both certificates in the wire codec's bytes.
 */
import * as fs from "node:fs"
import * as fsp from "node:fs/promises"
import * as path from "node:path"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Layer from "effect/Layer"
import type * as Scope from "effect/Scope"
import type { Block, CommittedBlock } from "./core/types.js"
import {
  bodyMatches,
  decodeCommitted,
  encodeCommitted,
  LOG_MAGIC,
  RECORD_HEADER_BYTES,
  recordHeader
} from "./internal/ledgerCodec.js"
import { AppendRefused, LedgerCorrupt, type LedgerError, LedgerIoError } from "./internal/ledgerErrors.js"
import { type Recovered, readFully, scan } from "./internal/ledgerScan.js"

export { AppendRefused, LedgerCorrupt, type LedgerError, LedgerIoError, type Recovered }

/** The ledger's directory inside the data directory, and its log file there. */
export const LEDGER_DIRECTORY = "ledger"
export const LOG_FILE = "blocks.log"

export interface LedgerOptions {
  /** The validator's data directory; the ledger lives in its `ledger/` subdirectory. */
  readonly dataDirectory: string
  /** The height of the first block an empty ledger takes (default 1: genesis, height 0, is implied). */
  readonly firstHeight?: bigint
}

export interface LedgerShape {
  /** The last committed block, or undefined for an empty ledger. */
  readonly tip: Effect.Effect<CommittedBlock | undefined>
  /** The tip's height; `firstHeight - 1` (0 by default) when empty. */
  readonly height: Effect.Effect<bigint>
  /**
   * Appends `blocks` in order and makes them durable before succeeding. The first must be at the
   * tip's height + 1 with the tip's hash as its parent (any parent for the first block of an empty
   * ledger), and each next one the child of the one before: otherwise `AppendRefused` and nothing is
   * written. Appends run one at a time. After a failed write or fsync the ledger refuses every later
   * append (`LedgerIoError`): what reached the disk is unknown until it is opened again.
   */
  readonly append: (blocks: ReadonlyArray<CommittedBlock>) => Effect.Effect<void, LedgerError>
  /** The block at `height`, or undefined outside the ledger's range. One positioned read. */
  readonly read: (height: bigint) => Effect.Effect<CommittedBlock | undefined, LedgerError>
  /**
   * Up to `max` blocks from `from` on, in ascending height, whose records add up to at most
   * `maxBytes` bytes, except that the first block is always returned (so a peer can sync past a
   * block bigger than its budget). Empty when `from` is outside the ledger. One positioned read.
   */
  readonly readRange: (
    from: bigint,
    max: number,
    maxBytes: number
  ) => Effect.Effect<ReadonlyArray<CommittedBlock>, LedgerError>
  /** What opening repaired. */
  readonly recovered: Recovered
}

/**
 * The record bodies of `blocks` appended after `tip`, or why the first one that cannot be: not the
 * next height, not the previous block's child, or not encodable.
 */
const encodeBatch = (
  tip: Block | undefined,
  firstHeight: bigint,
  blocks: ReadonlyArray<CommittedBlock>
): Either.Either<Array<Buffer>, AppendRefused> => {
  const bodies: Array<Buffer> = []
  let previous = tip
  for (const committed of blocks) {
    const { block } = committed
    const expected = previous === undefined ? firstHeight : previous.height + 1n
    if (block.height !== expected) {
      return Either.left(
        new AppendRefused({ height: block.height, reason: `the next height is ${expected}` })
      )
    }
    if (previous !== undefined && !Buffer.from(previous.hash).equals(block.parent)) {
      return Either.left(
        new AppendRefused({
          height: block.height,
          reason: `its parent is not the block at height ${previous.height}`
        })
      )
    }
    const body = encodeCommitted(committed)
    if (Either.isLeft(body))
      return Either.left(new AppendRefused({ height: block.height, reason: body.left }))
    bodies.push(body.right)
    previous = block
  }
  return Either.right(bodies)
}

const syncDirectory = (directory: string): void => {
  const fd = fs.openSync(directory, "r")
  try {
    fs.fsyncSync(fd)
  } finally {
    fs.closeSync(fd)
  }
}

/** A new log holding only its header, made atomically: a crash leaves either none or a whole one. */
const createLog = (directory: string, file: string): void => {
  const temporary = `${file}.tmp`
  const fd = fs.openSync(temporary, "w")
  try {
    fs.writeSync(fd, LOG_MAGIC)
    fs.fsyncSync(fd)
  } finally {
    fs.closeSync(fd)
  }
  fs.renameSync(temporary, file)
  syncDirectory(directory)
}

/**
 * Opens (creating if need be) the ledger in `<dataDirectory>/ledger/`. Reads the whole log once
 * (synchronously: it runs before the validator does anything else), cutting a torn last append with
 * a warning (`recovered` says how much) and failing with `LedgerCorrupt` on any other damage. The
 * scope's end waits for a running append, then closes the file. One process at a time: the caller
 * owns the data directory.
 */
export const open = (options: LedgerOptions): Effect.Effect<LedgerShape, LedgerError, Scope.Scope> =>
  Effect.gen(function* () {
    const directory = path.join(options.dataDirectory, LEDGER_DIRECTORY)
    const file = path.join(directory, LOG_FILE)
    const firstHeight = options.firstHeight ?? 1n
    const io = <A>(operation: string, f: () => A) =>
      Effect.try({ try: f, catch: (cause) => new LedgerIoError({ operation, file, cause }) })
    const ioAsync = <A>(operation: string, f: () => Promise<A>) =>
      Effect.tryPromise({ try: f, catch: (cause) => new LedgerIoError({ operation, file, cause }) })

    yield* io("create", () => {
      // A new `ledger/` entry must be durable as much as the log in it.
      if (fs.mkdirSync(directory, { recursive: true }) !== undefined) syncDirectory(options.dataDirectory)
      if (!fs.existsSync(file)) createLog(directory, file)
    })
    const handle = yield* Effect.acquireRelease(
      ioAsync("open", () => fsp.open(file, "r+")),
      (h) => Effect.promise(() => h.close().catch(() => undefined))
    )
    const size = (yield* ioAsync("stat", () => handle.stat())).size
    const magic = Buffer.alloc(LOG_MAGIC.length)
    if (size >= magic.length) yield* io("read", () => readFully(handle.fd, magic, 0))
    if (!magic.equals(LOG_MAGIC)) {
      return yield* new LedgerCorrupt({
        file,
        offset: 0,
        reason: "not a ledger log (or an unknown version): bad file header"
      })
    }
    const scanned = yield* io("scan", () => scan(handle.fd, size, file, firstHeight))
    if (scanned instanceof LedgerCorrupt) return yield* scanned
    if (scanned.recovered.truncatedBytes > 0) {
      yield* io("truncate", () => {
        fs.ftruncateSync(handle.fd, scanned.end)
        fs.fsyncSync(handle.fd)
      })
      yield* Effect.logWarning(
        `ledger ${file}: cut ${scanned.recovered.truncatedBytes} bytes of a torn last append at byte ${scanned.end} (${scanned.recovered.reason})`
      )
    }

    const offsets = scanned.offsets
    let end = scanned.end
    let tip: CommittedBlock | undefined
    let closed = false
    let broken: unknown
    const lock = yield* Effect.makeSemaphore(1)

    const isClosed = (operation: string) =>
      closed ? new LedgerIoError({ operation, file, cause: "the ledger is closed" }) : undefined
    const unusable = (operation: string) =>
      isClosed(operation) ??
      (broken === undefined
        ? undefined
        : new LedgerIoError({
            operation,
            file,
            cause: `unusable after an earlier failed write (${broken}); open it again`
          }))

    const tipHeight = () => firstHeight - 1n + BigInt(offsets.length)
    const recordEnd = (index: number) => (index + 1 < offsets.length ? offsets[index + 1]! : end)

    /** Records [first, first + count) decoded, from one positioned read. */
    const readRecords = (first: number, count: number) =>
      Effect.gen(function* () {
        const start = offsets[first]!
        const buf = Buffer.allocUnsafe(recordEnd(first + count - 1) - start)
        const { bytesRead } = yield* ioAsync("read", () => handle.read(buf, 0, buf.length, start))
        if (bytesRead !== buf.length) {
          return yield* new LedgerIoError({
            operation: "read",
            file,
            cause: `short read: ${bytesRead} of ${buf.length} bytes at ${start}`
          })
        }
        const out: Array<CommittedBlock> = []
        for (let i = first; i < first + count; i++) {
          const at = offsets[i]! - start
          const bodyAt = at + RECORD_HEADER_BYTES
          const body = buf.subarray(bodyAt, recordEnd(i) - start)
          const expected = firstHeight + BigInt(i)
          const decoded = bodyMatches(buf, at, body) ? decodeCommitted(body) : Either.left("checksum fails")
          if (Either.isLeft(decoded) || decoded.right.block.height !== expected) {
            const why = Either.isLeft(decoded) ? decoded.left : `holds height ${decoded.right.block.height}`
            return yield* new LedgerCorrupt({
              file,
              offset: offsets[i]!,
              reason: `the record of height ${expected} ${why} (changed since open)`
            })
          }
          out.push(decoded.right)
        }
        return out
      })

    if (offsets.length > 0) tip = (yield* readRecords(offsets.length - 1, 1))[0]

    yield* Effect.addFinalizer(() =>
      lock.withPermits(1)(
        Effect.sync(() => {
          closed = true
        })
      )
    )

    const append = (blocks: ReadonlyArray<CommittedBlock>) =>
      lock.withPermits(1)(
        Effect.gen(function* () {
          const refusal = unusable("append")
          if (refusal !== undefined) return yield* refusal
          if (blocks.length === 0) return
          const bodies = encodeBatch(tip?.block, firstHeight, blocks)
          if (Either.isLeft(bodies)) return yield* bodies.left
          const parts: Array<Uint8Array> = []
          for (const body of bodies.right) parts.push(recordHeader(body), body)
          const bytes = Buffer.concat(parts)
          const lastBody = parts[parts.length - 1]!
          // Uninterruptible from the write to the index: an abandoned write still in flight, or one
          // done but not indexed, would be overwritten in part by the next append's records.
          yield* Effect.uninterruptible(
            ioAsync("append", async () => {
              let done = 0
              while (done < bytes.length) {
                done += (await handle.write(bytes, done, bytes.length - done, end + done)).bytesWritten
              }
              await handle.datasync()
            }).pipe(
              Effect.tapError((e) =>
                Effect.sync(() => {
                  broken = e.cause instanceof Error ? e.cause.message : String(e.cause)
                })
              ),
              Effect.tap(() => {
                for (const body of bodies.right) {
                  offsets.push(end)
                  end += RECORD_HEADER_BYTES + body.length
                }
                // The tip as the disk has it, not the caller's (mutable) arrays.
                tip = Either.getOrThrow(decodeCommitted(Buffer.from(lastBody)))
              })
            )
          )
        })
      )

    const indexOf = (height: bigint): number | undefined =>
      height < firstHeight || height > tipHeight() ? undefined : Number(height - firstHeight)

    const ledger: LedgerShape = {
      tip: Effect.sync(() => tip),
      height: Effect.sync(tipHeight),
      append,
      read: (height) =>
        Effect.suspend(() => {
          const refusal = isClosed("read")
          if (refusal !== undefined) return Effect.fail(refusal)
          const index = indexOf(height)
          return index === undefined
            ? Effect.succeed(undefined)
            : Effect.map(readRecords(index, 1), (r) => r[0])
        }),
      readRange: (from, max, maxBytes) =>
        Effect.suspend(() => {
          const refusal = isClosed("read")
          if (refusal !== undefined) return Effect.fail(refusal)
          const first = indexOf(from)
          if (first === undefined || max < 1) return Effect.succeed([])
          let count = 1
          const limit = Math.min(offsets.length - first, Math.floor(max))
          while (count < limit && recordEnd(first + count) - offsets[first]! <= maxBytes) count++
          return readRecords(first, count)
        }),
      recovered: scanned.recovered
    }
    return ledger
  })

/**
 * The same contract in memory (no file, nothing survives the layer): the same checks and refusals,
 * records stored in their encoded form so reads hand out copies and `maxBytes` counts the same bytes.
 */
export const makeMemory = (options: { readonly firstHeight?: bigint } = {}): Effect.Effect<LedgerShape> =>
  Effect.gen(function* () {
    const firstHeight = options.firstHeight ?? 1n
    const bodies: Array<Buffer> = []
    let tip: CommittedBlock | undefined
    const lock = yield* Effect.makeSemaphore(1)
    const decode = (body: Buffer) => Either.getOrThrow(decodeCommitted(Buffer.from(body)))
    const indexOf = (height: bigint): number | undefined =>
      height < firstHeight || height >= firstHeight + BigInt(bodies.length)
        ? undefined
        : Number(height - firstHeight)
    return {
      tip: Effect.sync(() => tip),
      height: Effect.sync(() => firstHeight - 1n + BigInt(bodies.length)),
      append: (blocks) =>
        lock.withPermits(1)(
          Effect.suspend(() => {
            const encoded = encodeBatch(tip?.block, firstHeight, blocks)
            if (Either.isLeft(encoded)) return Effect.fail(encoded.left)
            bodies.push(...encoded.right)
            if (encoded.right.length > 0) tip = decode(encoded.right[encoded.right.length - 1]!)
            return Effect.void
          })
        ),
      read: (height) =>
        Effect.sync(() => {
          const index = indexOf(height)
          return index === undefined ? undefined : decode(bodies[index]!)
        }),
      readRange: (from, max, maxBytes) =>
        Effect.sync(() => {
          const first = indexOf(from)
          if (first === undefined || max < 1) return []
          const out = [decode(bodies[first]!)]
          let bytes = RECORD_HEADER_BYTES + bodies[first]!.length
          for (let i = first + 1; i < bodies.length && out.length < max; i++) {
            bytes += RECORD_HEADER_BYTES + bodies[i]!.length
            if (bytes > maxBytes) break
            out.push(decode(bodies[i]!))
          }
          return out
        }),
      recovered: { truncatedBytes: 0, reason: undefined }
    }
  })

/** The committed chain of this validator (see `open`). */
export class Ledger extends Context.Tag("@hotstuff2/example-hotstuff2/Ledger")<Ledger, LedgerShape>() {
  /** The ledger in `<dataDirectory>/ledger/`, closed with the layer. */
  static readonly layer = (options: LedgerOptions): Layer.Layer<Ledger, LedgerError> =>
    Layer.scoped(Ledger, open(options))

  /** The in-memory twin (`makeMemory`), for tests of the code that commits. */
  static readonly layerMemory = (options: { readonly firstHeight?: bigint } = {}): Layer.Layer<Ledger> =>
    Layer.effect(Ledger, makeMemory(options))
}
