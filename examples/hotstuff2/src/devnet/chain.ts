// Whether validators committed the same chain: every validator's ledger read back from its data
// directory, compared height by height.
import * as Effect from "effect/Effect"
import * as Ledger from "../Ledger.js"

/** One validator's committed chain: the hash (hex) of its block at each height from 1. */
export interface Chain {
  readonly index: number
  readonly hashes: ReadonlyArray<string>
}

/** Blocks read at a time. */
const READ_BATCH = 512
const READ_BATCH_BYTES = 64 * 1024 * 1024

/** Reads the committed chain of the validator whose data directory this is (it must not be running). */
export const readChain = (index: number, dataDirectory: string): Effect.Effect<Chain, Ledger.LedgerError> =>
  Effect.scoped(
    Effect.gen(function* () {
      const ledger = yield* Ledger.open({ dataDirectory })
      const height = yield* ledger.height
      const hashes: Array<string> = []
      let next = 1n
      while (next <= height) {
        const blocks = yield* ledger.readRange(next, READ_BATCH, READ_BATCH_BYTES)
        if (blocks.length === 0) break
        for (const b of blocks) hashes.push(Buffer.from(b.block.hash).toString("hex"))
        next += BigInt(blocks.length)
      }
      return { index, hashes }
    })
  )

export type Agreement =
  | {
      readonly _tag: "Agree"
      /** The highest height every validator holds: the common prefix. */
      readonly height: number
      /** Its block's hash (hex); undefined at height 0. */
      readonly hash: string | undefined
      /** Each validator's own height, by index. */
      readonly heights: ReadonlyArray<number>
    }
  | {
      readonly _tag: "Differ"
      /** The lowest height where two validators hold different blocks. */
      readonly height: number
      /** Validators by the hash they hold there. */
      readonly holders: ReadonlyArray<{ readonly hash: string; readonly validators: ReadonlyArray<number> }>
      readonly heights: ReadonlyArray<number>
    }

/**
 * Compares chains height by height: the common prefix is the lowest validator's height, and no two
 * validators may hold different blocks at any height, within the prefix or above it.
 */
export const agreement = (chains: ReadonlyArray<Chain>): Agreement => {
  const heights = chains.map((c) => c.hashes.length)
  const top = Math.max(0, ...heights)
  for (let h = 0; h < top; h++) {
    const byHash = new Map<string, Array<number>>()
    for (const c of chains) {
      const hash = c.hashes[h]
      if (hash === undefined) continue
      const holders = byHash.get(hash) ?? []
      holders.push(c.index)
      byHash.set(hash, holders)
    }
    if (byHash.size > 1) {
      return {
        _tag: "Differ",
        height: h + 1,
        holders: [...byHash].map(([hash, validators]) => ({ hash, validators })),
        heights
      }
    }
  }
  const height = chains.length === 0 ? 0 : Math.min(...heights)
  return { _tag: "Agree", height, hash: height === 0 ? undefined : chains[0]!.hashes[height - 1], heights }
}
