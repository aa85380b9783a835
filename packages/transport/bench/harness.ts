// Reporting for the transport benchmark, after packages/wire/bench/harness.ts: one JSON line per
// result on stdout, medians over rounds, percentiles of latency samples. (The wire harness is not
// importable across the project boundary, so the few lines it needs live here.)
import * as os from "node:os"

export interface Result {
  readonly bench: string
  readonly case: string
  readonly opsPerSec: number
  readonly rounds: ReadonlyArray<number>
  readonly [extra: string]: unknown
}

export const median = (xs: ReadonlyArray<number>): number => {
  const s = [...xs].sort((a, b) => a - b)
  const m = s.length >> 1
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2
}

/** The `p`-th percentile (0..100) of samples already sorted ascending, nearest rank. */
export const percentile = (sorted: Float64Array, p: number): number =>
  sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))]!

export const report = (result: Result | { readonly bench: string; readonly case: string }): void => {
  process.stdout.write(`${JSON.stringify(result)}\n`)
}

export const machine = () => ({
  cpu: os.cpus()[0]?.model ?? "unknown",
  cores: os.cpus().length,
  node: process.version,
  date: new Date().toISOString()
})

/** Monotonic nanoseconds: CLOCK_MONOTONIC, so comparable between processes on one Linux host. */
export const now = (): bigint => process.hrtime.bigint()

/** Rounds to `digits` decimals, for readable JSON. */
export const round = (x: number, digits = 3): number => {
  const f = 10 ** digits
  return Math.round(x * f) / f
}
