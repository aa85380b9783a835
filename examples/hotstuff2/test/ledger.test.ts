// The ledger on real files in a temp directory: appends survive a reopen, a torn last append is cut
// and counted, damage anywhere else is an error, and a refused append writes nothing.
import * as fs from "node:fs"
import { assert, describe, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as fc from "effect/FastCheck"
import type { CommittedBlock } from "../src/core/types.js"
import {
  crc32,
  crc32Table,
  encodeCommitted,
  LOG_MAGIC,
  RECORD_HEADER_BYTES,
  recordHeader
} from "../src/internal/ledgerCodec.js"
import * as Ledger from "../src/Ledger.js"
import { chain, comparable, flipByte, logFile, tempDirectory } from "./fixtures/ledger.js"

const open = (dataDirectory: string, options: Partial<Ledger.LedgerOptions> = {}) =>
  Ledger.open({ dataDirectory, ...options })

/** Opens, runs `f`, closes. */
const withLedger = <A, E>(
  dataDirectory: string,
  f: (ledger: Ledger.LedgerShape) => Effect.Effect<A, E>
): Effect.Effect<A, E | Ledger.LedgerError> => Effect.scoped(Effect.flatMap(open(dataDirectory), f))

/** Every block of the ledger read back one by one, and its tip and height. */
const contents = (ledger: Ledger.LedgerShape) =>
  Effect.gen(function* () {
    const height = yield* ledger.height
    const blocks: Array<CommittedBlock> = []
    for (let h = 1n; h <= height; h++) blocks.push((yield* ledger.read(h))!)
    return { height, tip: comparable(yield* ledger.tip), blocks: blocks.map(comparable) }
  })

const expected = (blocks: ReadonlyArray<CommittedBlock>) => ({
  height: BigInt(blocks.length),
  tip: comparable(blocks[blocks.length - 1]),
  blocks: blocks.map(comparable)
})

/** `count` blocks of equal record size (16-byte payloads, views under 128) appended; the record size. */
const appendEqualRecords = (dataDirectory: string, count: number) =>
  withLedger(dataDirectory, (ledger) => ledger.append(chain(1n, count))).pipe(
    Effect.map(() => {
      const size = fs.statSync(logFile(dataDirectory)).size - LOG_MAGIC.length
      assert.strictEqual(size % count, 0, "records of equal size")
      return size / count
    })
  )

describe("Ledger", () => {
  it("computes the same CRC-32 as the table version (and the standard check value)", () => {
    assert.strictEqual(crc32(Buffer.from("123456789")), 0xcbf43926)
    const data = Buffer.from(Array.from({ length: 1000 }, (_, i) => (i * 7) & 0xff))
    assert.strictEqual(crc32(data), crc32Table(data))
  })

  it.scoped("appends in batches, and after a reopen holds the same tip and every block", () =>
    Effect.gen(function* () {
      const directory = yield* tempDirectory
      const blocks = chain(1n, 25, { payloadBytes: (h) => Number(h) * 13 })
      yield* withLedger(directory, (ledger) =>
        Effect.gen(function* () {
          assert.strictEqual(yield* ledger.height, 0n)
          assert.isUndefined(yield* ledger.tip)
          assert.isUndefined(yield* ledger.read(1n))
          yield* ledger.append(blocks.slice(0, 1))
          yield* ledger.append(blocks.slice(1, 10))
          yield* ledger.append([])
          yield* ledger.append(blocks.slice(10))
          assert.deepStrictEqual(yield* contents(ledger), expected(blocks))
        })
      )
      const reopened = yield* open(directory)
      assert.deepStrictEqual(reopened.recovered, { truncatedBytes: 0, reason: undefined })
      assert.deepStrictEqual(yield* contents(reopened), expected(blocks))
      assert.isUndefined(yield* reopened.read(0n))
      assert.isUndefined(yield* reopened.read(26n))
    })
  )

  it.scoped("starts an empty ledger at firstHeight, and holds it to that height on reopen", () =>
    Effect.gen(function* () {
      const directory = yield* tempDirectory
      yield* Effect.scoped(
        Effect.gen(function* () {
          const l = yield* open(directory, { firstHeight: 100n })
          assert.strictEqual(yield* l.height, 99n)
          const refused = yield* Effect.flip(l.append(chain(1n, 1)))
          assert.strictEqual(refused._tag, "AppendRefused")
          yield* l.append(chain(100n, 3))
          assert.strictEqual(yield* l.height, 102n)
        })
      )
      const error = yield* Effect.flip(Effect.scoped(open(directory)))
      assert.strictEqual(error._tag, "LedgerCorrupt")
    })
  )

  it.scoped("cuts a torn last record (the file shortened), counts it, and appends again after it", () =>
    Effect.gen(function* () {
      const directory = yield* tempDirectory
      const recordBytes = yield* appendEqualRecords(directory, 10)
      const file = logFile(directory)
      fs.truncateSync(file, fs.statSync(file).size - 5)
      yield* withLedger(directory, (ledger) =>
        Effect.gen(function* () {
          assert.strictEqual(ledger.recovered.truncatedBytes, recordBytes - 5)
          assert.match(ledger.recovered.reason!, /partial record/)
          assert.deepStrictEqual(yield* contents(ledger), expected(chain(1n, 9)))
          assert.isUndefined(yield* ledger.read(10n))
          yield* ledger.append(chain(10n, 2))
        })
      )
      const reopened = yield* open(directory)
      assert.strictEqual(reopened.recovered.truncatedBytes, 0)
      assert.deepStrictEqual(yield* contents(reopened), expected(chain(1n, 11)))
    })
  )

  it.scoped(
    "cuts half a record of garbage, a partial header, and a zero-filled tail after the last record",
    () =>
      Effect.gen(function* () {
        const directory = yield* tempDirectory
        yield* appendEqualRecords(directory, 5)
        const file = logFile(directory)
        // A valid header announcing 500 body bytes, then only 100 of them.
        const header = Buffer.alloc(RECORD_HEADER_BYTES)
        header.writeUInt32BE(500, 0)
        header.writeUInt32BE(0x12345678, 4)
        header.writeUInt32BE(crc32(header.subarray(0, 8)), 8)
        for (const tail of [
          Buffer.concat([header, Buffer.alloc(100, 7)]),
          Buffer.from([1, 2, 3]),
          Buffer.alloc(4096)
        ]) {
          fs.appendFileSync(file, tail)
          yield* withLedger(directory, (ledger) =>
            Effect.gen(function* () {
              assert.strictEqual(ledger.recovered.truncatedBytes, tail.length)
              assert.strictEqual(yield* ledger.height, 5n)
            })
          )
        }
      })
  )

  it.scoped(
    "cuts a torn block whose payload holds a valid record, never taking the payload for a record",
    () =>
      Effect.gen(function* () {
        const directory = yield* tempDirectory
        yield* appendEqualRecords(directory, 3)
        const file = logFile(directory)
        const before = fs.statSync(file).size
        // A leader's payload that is itself a whole, valid record (of height 5, the child of height 4).
        const [inner] = chain(5n, 1)
        const body = Either.getOrThrow(encodeCommitted(inner!))
        const [outer] = chain(4n, 1, { payloadBytes: () => 0 })
        const payload = Buffer.concat([Buffer.alloc(50), recordHeader(body), body, Buffer.alloc(50)])
        yield* withLedger(directory, (ledger) =>
          ledger.append([{ ...outer!, block: { ...outer!.block, payload } }])
        )
        const size = fs.statSync(file).size
        fs.truncateSync(file, size - 20)
        yield* withLedger(directory, (ledger) =>
          Effect.gen(function* () {
            assert.strictEqual(ledger.recovered.truncatedBytes, size - 20 - before)
            assert.strictEqual(yield* ledger.height, 3n)
          })
        )
      })
  )

  it.scoped("cuts a last record whose body or header has a flipped byte", () =>
    Effect.gen(function* () {
      for (const within of [RECORD_HEADER_BYTES + 40, 2]) {
        const directory = yield* tempDirectory
        const recordBytes = yield* appendEqualRecords(directory, 6)
        const file = logFile(directory)
        flipByte(file, LOG_MAGIC.length + 5 * recordBytes + within)
        yield* withLedger(directory, (ledger) =>
          Effect.gen(function* () {
            assert.strictEqual(ledger.recovered.truncatedBytes, recordBytes)
            assert.match(ledger.recovered.reason!, /checksum fails/)
            assert.deepStrictEqual(yield* contents(ledger), expected(chain(1n, 5)))
            yield* ledger.append(chain(6n, 1))
          })
        )
        assert.strictEqual(fs.statSync(file).size, LOG_MAGIC.length + 6 * recordBytes)
      }
    })
  )

  it.scoped(
    "refuses to open a log with a flipped byte in a middle record (body or length), and cuts nothing",
    () =>
      Effect.gen(function* () {
        for (const within of [RECORD_HEADER_BYTES + 40, 3]) {
          const directory = yield* tempDirectory
          const recordBytes = yield* appendEqualRecords(directory, 6)
          const file = logFile(directory)
          const offset = LOG_MAGIC.length + 2 * recordBytes
          flipByte(file, offset + within)
          const size = fs.statSync(file).size
          const error = yield* Effect.flip(Effect.scoped(open(directory)))
          assert.strictEqual(error._tag, "LedgerCorrupt")
          assert.strictEqual((error as Ledger.LedgerCorrupt).offset, offset)
          assert.match(error.message, /after height 2, yet a valid record follows/)
          assert.strictEqual(fs.statSync(file).size, size)
        }
      })
  )

  it.scoped("refuses to open a file that is not a ledger log", () =>
    Effect.gen(function* () {
      const directory = yield* tempDirectory
      yield* appendEqualRecords(directory, 1)
      flipByte(logFile(directory), 0)
      const error = yield* Effect.flip(Effect.scoped(open(directory)))
      assert.strictEqual(error._tag, "LedgerCorrupt")
      assert.match(error.message, /bad file header/)
    })
  )

  it.scoped("refuses a block that is not the next height or not the tip's child, writing nothing", () =>
    Effect.gen(function* () {
      const directory = yield* tempDirectory
      const file = logFile(directory)
      const ledger = yield* open(directory)
      yield* ledger.append(chain(1n, 3))
      const size = fs.statSync(file).size
      const [next] = chain(4n, 1)
      const stranger = chain(4n, 1, { seed: "other" })[0]!
      const malformed = { ...next!, certificate: { ...next!.certificate, signers: new Uint8Array([1]) } }
      const refusals: Array<[ReadonlyArray<CommittedBlock>, RegExp]> = [
        [chain(5n, 1), /height 5: the next height is 4/],
        [chain(3n, 1), /height 3: the next height is 4/],
        [[stranger], /height 4: its parent is not the block at height 3/],
        [[next!, chain(6n, 1)[0]!], /height 6: the next height is 5/],
        [[next!, chain(5n, 1, { seed: "other" })[0]!], /height 5: its parent is not the block at height 4/],
        [[malformed], /height 4: certificate: .*signer bitmap/]
      ]
      for (const [blocks, why] of refusals) {
        const error = yield* Effect.flip(ledger.append(blocks))
        assert.strictEqual(error._tag, "AppendRefused")
        assert.match(error.message, why)
        assert.strictEqual(fs.statSync(file).size, size)
        assert.strictEqual(yield* ledger.height, 3n)
      }
      yield* ledger.append([next!])
      assert.strictEqual(yield* ledger.height, 4n)
    })
  )

  it.scoped(
    "bounds readRange by count and by bytes, returning at least the first block (file and in-memory twin)",
    () =>
      Effect.gen(function* () {
        const directory = yield* tempDirectory
        const recordBytes = yield* appendEqualRecords(directory, 10)
        const memory = yield* Ledger.makeMemory()
        yield* memory.append(chain(1n, 10))
        for (const ledger of [yield* open(directory), memory]) {
          const heights = (blocks: ReadonlyArray<CommittedBlock>) => blocks.map((b) => b.block.height)
          const range = (from: bigint, max: number, maxBytes: number) =>
            Effect.map(ledger.readRange(from, max, maxBytes), heights)
          assert.deepStrictEqual(yield* range(3n, 4, 1 << 20), [3n, 4n, 5n, 6n])
          assert.deepStrictEqual(yield* range(8n, 100, 1 << 20), [8n, 9n, 10n])
          assert.deepStrictEqual(yield* range(2n, 100, 3 * recordBytes), [2n, 3n, 4n])
          assert.deepStrictEqual(yield* range(2n, 100, 3 * recordBytes - 1), [2n, 3n])
          assert.deepStrictEqual(yield* range(2n, 100, 1), [2n])
          assert.deepStrictEqual(yield* range(11n, 5, 1 << 20), [])
          assert.deepStrictEqual(yield* range(0n, 5, 1 << 20), [])
          assert.deepStrictEqual(yield* range(1n, 0, 1 << 20), [])
          const all = yield* ledger.readRange(1n, 10, 1 << 20)
          assert.deepStrictEqual(all.map(comparable), chain(1n, 10).map(comparable))
        }
      })
  )

  it.scoped("reports a record changed on disk after open as LedgerCorrupt when it is read", () =>
    Effect.gen(function* () {
      const directory = yield* tempDirectory
      const recordBytes = yield* appendEqualRecords(directory, 4)
      const ledger = yield* open(directory)
      flipByte(logFile(directory), LOG_MAGIC.length + recordBytes + RECORD_HEADER_BYTES + 30)
      const error = yield* Effect.flip(ledger.read(2n))
      assert.strictEqual(error._tag, "LedgerCorrupt")
      assert.isDefined(yield* ledger.read(3n))
    })
  )

  it.scoped("fails reads and appends once its scope has closed", () =>
    Effect.gen(function* () {
      const directory = yield* tempDirectory
      const ledger = yield* withLedger(directory, (l) => Effect.as(l.append(chain(1n, 2)), l))
      for (const error of [
        yield* Effect.flip(ledger.read(1n)),
        yield* Effect.flip(ledger.append(chain(3n, 1)))
      ]) {
        assert.strictEqual(error._tag, "LedgerIoError")
        assert.match(error.message, /closed/)
      }
    })
  )

  it.scoped.prop(
    "random batches of random blocks read back equal after a reopen, one by one and as one range",
    [fc.array(fc.array(fc.integer({ min: 0, max: 600 }), { minLength: 1, maxLength: 6 }), { maxLength: 12 })],
    ([batches]) =>
      Effect.gen(function* () {
        const directory = yield* tempDirectory
        const sizes = batches.flat()
        const blocks = chain(1n, sizes.length, { payloadBytes: (h) => sizes[Number(h) - 1]! })
        yield* withLedger(directory, (ledger) =>
          Effect.gen(function* () {
            let at = 0
            for (const batch of batches) {
              yield* ledger.append(blocks.slice(at, at + batch.length))
              at += batch.length
            }
          })
        )
        yield* withLedger(directory, (ledger) =>
          Effect.gen(function* () {
            assert.strictEqual(ledger.recovered.truncatedBytes, 0)
            assert.deepStrictEqual(yield* contents(ledger), expected(blocks))
            const range = yield* ledger.readRange(1n, blocks.length, Number.MAX_SAFE_INTEGER)
            assert.deepStrictEqual(range.map(comparable), blocks.map(comparable))
          })
        )
      }),
    { fastCheck: { numRuns: 40 } }
  )

  it.scoped.prop(
    "the in-memory twin gives the same answers and refusals as the file ledger",
    [
      fc.array(
        fc.oneof(
          fc.record({
            op: fc.constant("append" as const),
            sizes: fc.array(fc.nat(300), { maxLength: 4 }),
            skip: fc.nat(2)
          }),
          fc.record({
            op: fc.constant("range" as const),
            from: fc.nat(30),
            max: fc.nat(8),
            maxBytes: fc.nat(3000)
          })
        ),
        { maxLength: 25 }
      )
    ],
    ([ops]) =>
      Effect.gen(function* () {
        const file = yield* open(yield* tempDirectory)
        const memory = yield* Ledger.makeMemory()
        const outcome = <A>(effect: Effect.Effect<A, Ledger.LedgerError>) =>
          Effect.either(effect).pipe(
            Effect.map((e) => (e._tag === "Left" ? `${e.left._tag}: ${e.left.message}` : e.right))
          )
        for (const op of ops) {
          const height = yield* file.height
          if (op.op === "append") {
            // skip 0: the next blocks; 1 or 2: a gap, refused by both.
            const from = height + 1n + BigInt(op.skip)
            const blocks = chain(from, op.sizes.length, { payloadBytes: (h) => op.sizes[Number(h - from)]! })
            assert.deepStrictEqual(yield* outcome(memory.append(blocks)), yield* outcome(file.append(blocks)))
          } else {
            const range = (l: Ledger.LedgerShape) =>
              outcome(l.readRange(BigInt(op.from), op.max, op.maxBytes)).pipe(
                Effect.map((r) => (typeof r === "string" ? r : r.map(comparable)))
              )
            assert.deepStrictEqual(yield* range(memory), yield* range(file))
          }
          assert.strictEqual(yield* memory.height, yield* file.height)
          assert.deepStrictEqual(comparable(yield* memory.tip), comparable(yield* file.tip))
        }
      }),
    { fastCheck: { numRuns: 30 } }
  )
})
