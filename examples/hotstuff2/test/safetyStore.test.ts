// The safety store on real files: a saved state survives a new store over the same directory, a save
// never lowers what is stored, and a damaged file stops the validator instead of being forgotten.
import * as fs from "node:fs"
import * as path from "node:path"
import { assert, describe, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import type { SafetyState } from "../src/core/types.js"
import * as SafetyStore from "../src/SafetyStore.js"
import { certificate, flipByte, hashAt, tempDirectory } from "./fixtures/ledger.js"

const state = (lastVoted: bigint, lastTimedOut: bigint, lockedView: bigint, seed = "chain"): SafetyState => ({
  lastVoted,
  lastTimedOut,
  locked: certificate(lockedView, hashAt(seed, lockedView))
})

/** A state as plain values, for deep equality. */
const plain = (s: SafetyState | undefined) =>
  s === undefined
    ? undefined
    : {
        lastVoted: s.lastVoted,
        lastTimedOut: s.lastTimedOut,
        locked: { view: s.locked.view, blockHash: Buffer.from(s.locked.blockHash).toString("hex") }
      }

const fresh = (dataDirectory: string) => SafetyStore.make({ dataDirectory })
const fileOf = (dataDirectory: string) => path.join(dataDirectory, SafetyStore.SAFETY_FILE)

describe("SafetyStore", () => {
  it.scoped(
    "loads nothing before the first save, and a saved state from a new store over the same directory",
    () =>
      Effect.gen(function* () {
        const directory = yield* tempDirectory
        const store = yield* fresh(directory)
        assert.isUndefined(yield* store.load)
        const saved = yield* store.save(state(7n, 5n, 6n))
        assert.deepStrictEqual(plain(saved), plain(state(7n, 5n, 6n)))
        yield* store.save(state(9n, 5n, 8n))
        assert.deepStrictEqual(plain(yield* (yield* fresh(directory)).load), plain(state(9n, 5n, 8n)))
        assert.deepStrictEqual(fs.readdirSync(directory), [SafetyStore.SAFETY_FILE])
      })
  )

  it.scoped(
    "never lowers the stored state: keeps the higher view of each field and the lock of the higher view",
    () =>
      Effect.gen(function* () {
        const directory = yield* tempDirectory
        yield* (yield* fresh(directory)).save(state(10n, 12n, 9n))
        // A new store (a restart) merges with what is on disk, not with nothing.
        const store = yield* fresh(directory)
        const kept = yield* store.save(state(4n, 20n, 3n, "other"))
        assert.deepStrictEqual(plain(kept), plain(state(10n, 20n, 9n)))
        const tie = yield* store.save(state(11n, 20n, 9n, "other"))
        assert.deepStrictEqual(plain(tie), plain(state(11n, 20n, 9n)), "the stored lock wins a tie")
        assert.deepStrictEqual(plain(yield* (yield* fresh(directory)).load), plain(state(11n, 20n, 9n)))
      })
  )

  it.scoped("writes nothing for a save that changes nothing", () =>
    Effect.gen(function* () {
      const directory = yield* tempDirectory
      const store = yield* fresh(directory)
      yield* store.save(state(3n, 3n, 2n))
      const before = fs.statSync(fileOf(directory)).ino
      yield* store.save(state(1n, 2n, 1n))
      assert.strictEqual(fs.statSync(fileOf(directory)).ino, before, "not replaced")
    })
  )

  it.scoped("refuses to load or save over a damaged or torn file, and leaves it as it was", () =>
    Effect.gen(function* () {
      const damage: ReadonlyArray<[string, (file: string) => void, RegExp]> = [
        ["a flipped byte", (file) => flipByte(file, 20), /checksum mismatch/],
        [
          "a torn file",
          (file) => fs.truncateSync(file, fs.statSync(file).size - 10),
          /checksum mismatch|locked/
        ],
        ["an empty file", (file) => fs.truncateSync(file, 0), /shorter than any safety file/],
        ["a foreign file", (file) => flipByte(file, 0), /bad magic/]
      ]
      for (const [what, spoil, why] of damage) {
        const directory = yield* tempDirectory
        yield* (yield* fresh(directory)).save(state(5n, 5n, 4n))
        const file = fileOf(directory)
        spoil(file)
        const bytes = fs.readFileSync(file)
        const store = yield* fresh(directory)
        const loaded = yield* Effect.flip(store.load)
        assert.strictEqual(loaded._tag, "SafetyStoreCorrupt", what)
        assert.match(loaded.message, why, what)
        const saved = yield* Effect.flip(store.save(state(50n, 50n, 40n)))
        assert.strictEqual(saved._tag, "SafetyStoreCorrupt", what)
        assert.deepStrictEqual(fs.readFileSync(file), bytes, what)
      }
    })
  )

  it.scoped("ignores a temporary file left by a save that crashed before its rename", () =>
    Effect.gen(function* () {
      const directory = yield* tempDirectory
      yield* (yield* fresh(directory)).save(state(5n, 5n, 4n))
      fs.writeFileSync(`${fileOf(directory)}.tmp`, Buffer.from([1, 2, 3]))
      const store = yield* fresh(directory)
      assert.deepStrictEqual(plain(yield* store.load), plain(state(5n, 5n, 4n)))
      yield* store.save(state(6n, 5n, 4n))
      assert.deepStrictEqual(plain(yield* (yield* fresh(directory)).load), plain(state(6n, 5n, 4n)))
    })
  )

  it.scoped("refuses a state it cannot write (a view outside u64, a malformed certificate)", () =>
    Effect.gen(function* () {
      const directory = yield* tempDirectory
      const store = yield* fresh(directory)
      const bad = state(1n, 1n, 1n)
      for (const invalid of [
        { ...bad, lastVoted: 2n ** 64n },
        { ...bad, locked: { ...bad.locked, signers: new Uint8Array([1]) } }
      ]) {
        const error = yield* Effect.flip(store.save(invalid))
        assert.strictEqual(error._tag, "SafetyStateInvalid")
      }
      assert.isFalse(fs.existsSync(fileOf(directory)))
    })
  )

  it.effect("layerMemory keeps the same never-lower contract", () =>
    Effect.gen(function* () {
      const store = yield* SafetyStore.SafetyStore
      assert.deepStrictEqual(plain(yield* store.load), plain(state(2n, 2n, 1n)))
      assert.deepStrictEqual(plain(yield* store.save(state(1n, 3n, 0n))), plain(state(2n, 3n, 1n)))
      assert.deepStrictEqual(plain(yield* store.load), plain(state(2n, 3n, 1n)))
    }).pipe(Effect.provide(SafetyStore.SafetyStore.layerMemory(state(2n, 2n, 1n))))
  )
})
