// A small benchmark harness: runs an operation in timed rounds and prints one JSON line per result
// with the median rate, so results compare across runs on a noisy shared machine.
import * as os from "node:os"

export interface Result {
  readonly bench: string
  readonly case: string
  readonly opsPerSec: number
  readonly rounds: ReadonlyArray<number>
  readonly [extra: string]: unknown
}

const median = (xs: ReadonlyArray<number>): number => {
  const s = [...xs].sort((a, b) => a - b)
  const m = s.length >> 1
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2
}

/** Runs `op` in batches of `batch` calls for `rounds` rounds of about `roundMs` each; ops/s per round. */
export const measure = (
  op: () => void,
  options: { rounds?: number; roundMs?: number; batch?: number } = {}
) => {
  const { rounds = 7, roundMs = 400, batch = 1000 } = options
  for (let i = 0; i < batch * 20; i++) op() // warm-up: let the JIT settle
  const rates: Array<number> = []
  for (let r = 0; r < rounds; r++) {
    let n = 0
    const start = process.hrtime.bigint()
    const until = start + BigInt(roundMs) * 1_000_000n
    let now = start
    while (now < until) {
      for (let i = 0; i < batch; i++) op()
      n += batch
      now = process.hrtime.bigint()
    }
    rates.push(n / (Number(now - start) / 1e9))
  }
  return { opsPerSec: Math.round(median(rates)), rounds: rates.map(Math.round) }
}

export const report = (result: Result): void => {
  process.stdout.write(`${JSON.stringify(result)}\n`)
}

export const machine = () => ({
  cpu: os.cpus()[0]?.model ?? "unknown",
  cores: os.cpus().length,
  node: process.version,
  date: new Date().toISOString()
})
