/**
 * The validator's safety state on disk (`<dataDirectory>/safety`): the highest view it voted in, the
 * highest it timed out in, and its lock. The driver saves it before sending the vote or timeout it
 * guards, so a restarted validator can never vote twice in a view or against its lock.
 *
 * The file (internal/ledgerCodec.ts): "hs2safe" and version 1, a CRC-32 of the rest, the two views as
 * u64 and the locked certificate in the wire codec's bytes. Written whole to `safety.tmp`, fsynced,
 * renamed over `safety`, and the directory fsynced: a crash leaves the old file or the new one.
 */
import * as fsp from "node:fs/promises"
import * as path from "node:path"
import * as Context from "effect/Context"
import * as Data from "effect/Data"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Layer from "effect/Layer"
import type { SafetyState } from "./core/types.js"
import { decodeSafety, encodeSafety } from "./internal/ledgerCodec.js"

/** The safety file's name in the data directory. */
export const SAFETY_FILE = "safety"

/**
 * The safety file exists but cannot be trusted: a bad checksum, a short file, unknown bytes. The
 * validator must not start: starting without its lock and last views could make it vote twice in a
 * view or for a block that conflicts with a committed one.
 *
 * What the operator does: keep the file for inspection, then either restore a good copy, or move it
 * aside and start the validator so that it cannot vote in any view it might have voted in before:
 * wait until the network's views are past anything this validator can have seen (the newest
 * certificate any peer or the ledger holds, plus a margin for views in flight), write a safety state
 * with `lastVoted` and `lastTimedOut` at that view and the newest known certificate as `locked`, and
 * only then start it.
 */
export class SafetyStoreCorrupt extends Data.TaggedError("SafetyStoreCorrupt")<{
  readonly file: string
  readonly reason: string
}> {
  override get message() {
    return `safety state ${this.file} is corrupt (${this.reason}): refusing to start without it, see SafetyStoreCorrupt`
  }
}

/** A state that cannot be written: a view outside u64, a malformed certificate. */
export class SafetyStateInvalid extends Data.TaggedError("SafetyStateInvalid")<{ readonly reason: string }> {
  override get message() {
    return `safety state not saved: ${this.reason}`
  }
}

/** The file system failed us; after a failed save the file holds the old state or the new one. */
export class SafetyStoreIoError extends Data.TaggedError("SafetyStoreIoError")<{
  readonly operation: string
  readonly file: string
  readonly cause: unknown
}> {
  override get message() {
    const cause = this.cause instanceof Error ? this.cause.message : String(this.cause)
    return `safety state ${this.operation} on ${this.file} failed: ${cause}`
  }
}

export type SafetyStoreError = SafetyStoreCorrupt | SafetyStateInvalid | SafetyStoreIoError

export interface SafetyStoreOptions {
  /** The validator's data directory; the state lives in its `safety` file. */
  readonly dataDirectory: string
}

export interface SafetyStoreShape {
  /** The stored state; undefined before the first save ever. Fails with `SafetyStoreCorrupt` on a bad file. */
  readonly load: Effect.Effect<SafetyState | undefined, SafetyStoreError>
  /**
   * Makes `state` durable, never lowering what is stored: each view is kept at the higher of the
   * stored and the given one, and the lock at the certificate of the higher view (the stored one on a
   * tie). A state lower in any field is a bug in the caller, logged as a warning, not an error: the
   * merged state is still safe to act on. Succeeds with what is now on disk, once it is there. A
   * save that changes nothing writes nothing. Saves run one at a time.
   */
  readonly save: (state: SafetyState) => Effect.Effect<SafetyState, SafetyStoreError>
}

/** The higher of two states field by field, and the fields `next` would have lowered. */
export const merge = (
  stored: SafetyState | undefined,
  next: SafetyState
): { readonly state: SafetyState; readonly lowered: ReadonlyArray<string> } => {
  if (stored === undefined) return { state: next, lowered: [] }
  const lowered: Array<string> = []
  if (next.lastVoted < stored.lastVoted) lowered.push(`lastVoted ${next.lastVoted} < ${stored.lastVoted}`)
  if (next.lastTimedOut < stored.lastTimedOut)
    lowered.push(`lastTimedOut ${next.lastTimedOut} < ${stored.lastTimedOut}`)
  if (next.locked.view < stored.locked.view)
    lowered.push(`locked view ${next.locked.view} < ${stored.locked.view}`)
  return {
    state: {
      lastVoted: next.lastVoted > stored.lastVoted ? next.lastVoted : stored.lastVoted,
      lastTimedOut: next.lastTimedOut > stored.lastTimedOut ? next.lastTimedOut : stored.lastTimedOut,
      locked: next.locked.view > stored.locked.view ? next.locked : stored.locked
    },
    lowered
  }
}

const same = (a: SafetyState, b: SafetyState) =>
  a.lastVoted === b.lastVoted && a.lastTimedOut === b.lastTimedOut && a.locked === b.locked

/** The store over `state` and `write`: the merge, the serialisation and the warning, for both twins. */
const makeWith = (
  read: Effect.Effect<SafetyState | undefined, SafetyStoreError>,
  write: (state: SafetyState) => Effect.Effect<void, SafetyStoreError>
): Effect.Effect<SafetyStoreShape> =>
  Effect.gen(function* () {
    const lock = yield* Effect.makeSemaphore(1)
    // What is on disk, once read or written: saves merge with it without reading the file again.
    let known: { readonly state: SafetyState | undefined } | undefined
    const current = Effect.suspend(() =>
      known !== undefined ? Effect.succeed(known.state) : Effect.tap(read, (state) => (known = { state }))
    )
    return {
      load: lock.withPermits(1)(current),
      save: (next) =>
        lock.withPermits(1)(
          Effect.gen(function* () {
            const stored = yield* current
            const { state, lowered } = merge(stored, next)
            if (lowered.length > 0) {
              yield* Effect.logWarning(
                `safety state: kept the stored values over lower ones (${lowered.join(", ")})`
              )
            }
            if (stored !== undefined && same(state, stored)) return stored
            // Uninterruptible with the cache update: a save abandoned mid-write would race the next
            // one on the temporary file, and one written but not cached would let a later save
            // merge with an older state and lower the file. After a failed write the file may hold
            // either state: the next save reads it again.
            yield* Effect.uninterruptible(
              write(state).pipe(
                Effect.tap(() => {
                  known = { state }
                }),
                Effect.tapError(() =>
                  Effect.sync(() => {
                    known = undefined
                  })
                )
              )
            )
            return state
          })
        )
    }
  })

/** The store in `<dataDirectory>/safety`. Nothing is read until `load` or the first `save`. */
export const make = (options: SafetyStoreOptions): Effect.Effect<SafetyStoreShape> => {
  const directory = options.dataDirectory
  const file = path.join(directory, SAFETY_FILE)
  const io = <A>(operation: string, f: () => Promise<A>) =>
    Effect.tryPromise({ try: f, catch: (cause) => new SafetyStoreIoError({ operation, file, cause }) })
  const read = Effect.gen(function* () {
    const bytes = yield* io("read", () =>
      fsp.readFile(file).catch((e: NodeJS.ErrnoException) => {
        if (e.code === "ENOENT") return undefined
        throw e
      })
    )
    if (bytes === undefined) return undefined
    const decoded = decodeSafety(bytes)
    if (Either.isLeft(decoded)) return yield* new SafetyStoreCorrupt({ file, reason: decoded.left })
    return decoded.right
  })
  const write = (state: SafetyState) =>
    Effect.gen(function* () {
      const bytes = encodeSafety(state)
      if (Either.isLeft(bytes)) return yield* new SafetyStateInvalid({ reason: bytes.left })
      const temporary = `${file}.tmp`
      yield* io("write", async () => {
        await fsp.mkdir(directory, { recursive: true })
        const handle = await fsp.open(temporary, "w")
        try {
          await handle.writeFile(bytes.right)
          await handle.sync()
        } finally {
          await handle.close()
        }
        await fsp.rename(temporary, file)
        const dir = await fsp.open(directory, "r")
        try {
          await dir.sync()
        } finally {
          await dir.close()
        }
      })
    })
  return makeWith(read, write)
}

/** The validator's persisted safety state (see `make`). */
export class SafetyStore extends Context.Tag("@hotstuff2/example-hotstuff2/SafetyStore")<
  SafetyStore,
  SafetyStoreShape
>() {
  /** The store in `<dataDirectory>/safety`. */
  static readonly layer = (options: SafetyStoreOptions): Layer.Layer<SafetyStore> =>
    Layer.effect(SafetyStore, make(options))

  /** The same contract in memory, starting from `initial`: for tests of the code that saves. */
  static readonly layerMemory = (initial?: SafetyState): Layer.Layer<SafetyStore> =>
    Layer.effect(
      SafetyStore,
      Effect.suspend(() => {
        let stored = initial
        return makeWith(
          Effect.sync(() => stored),
          (state) =>
            Effect.sync(() => {
              stored = state
            })
        )
      })
    )
}
