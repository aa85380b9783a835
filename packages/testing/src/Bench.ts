/**
 * Benchmark reporting shared by every package: one JSON line per result on stdout, medians over
 * timed rounds, percentiles of latency samples, and the machine the figures came from.
 */
import { execFileSync } from "node:child_process"
import * as os from "node:os"
import { PerformanceObserver } from "node:perf_hooks"

export interface Result {
  readonly bench: string
  readonly case: string
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

/** Runs `op` in batches of `batch` calls for `rounds` rounds of about `roundMs` each; the median ops/s. */
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

/**
 * Keeps stdout for result lines (`report`): from now on `console.log`, `console.info` and
 * `console.debug` write to stderr, and so does Effect's default logger, which uses them (a warning
 * from a validator under test would otherwise land between the JSON lines). Each benchmark calls
 * it before anything else.
 */
export const resultsOnStdout = (): void => {
  const toStderr = (...args: ReadonlyArray<unknown>): void => {
    console.error(...args)
  }
  console.log = toStderr
  console.info = toStderr
  console.debug = toStderr
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

/** Monotonic nanoseconds: CLOCK_MONOTONIC, so comparable between processes on one Linux host. */
export const now = (): bigint => process.hrtime.bigint()

/** Rounds to `digits` decimals, for readable JSON. */
export const round = (x: number, digits = 3): number => {
  const f = 10 ** digits
  return Math.round(x * f) / f
}

/** User plus system CPU time of this process, in microseconds. */
export const cpuMicros = (): number => {
  const usage = process.cpuUsage()
  return usage.user + usage.system
}

let gcTotal = 0
let gcObserved = false

/** Milliseconds spent in garbage collection since the first call (a PerformanceObserver on 'gc'). */
export const gcMillis = (): number => {
  if (!gcObserved) {
    gcObserved = true
    new PerformanceObserver((list) => {
      for (const entry of list.getEntries()) gcTotal += entry.duration
    }).observe({ entryTypes: ["gc"] })
  }
  return gcTotal
}

/**
 * Pins a process (all its threads) to a CPU, or a list such as "0-1", with taskset; false when that
 * is not possible here.
 */
export const pin = (pid: number, cpu: number | string): boolean => {
  try {
    execFileSync("taskset", ["-a", "-p", "-c", String(cpu), String(pid)], { stdio: "ignore" })
    return true
  } catch {
    return false
  }
}

/**
 * Latency samples (nanoseconds, in blocks) summarised in microseconds: percentiles, mean and max
 * over all blocks together. The merged samples come back sorted, for callers' own figures.
 */
export const latency = (blocks: ReadonlyArray<Float64Array>) => {
  const all = new Float64Array(blocks.reduce((n, s) => n + s.length, 0))
  let at = 0
  for (const s of blocks) {
    all.set(s, at)
    at += s.length
  }
  const mean = all.reduce((a, b) => a + b, 0) / all.length
  all.sort()
  return {
    count: all.length,
    meanNanos: mean,
    p50Us: round(percentile(all, 50) / 1e3, 1),
    p90Us: round(percentile(all, 90) / 1e3, 1),
    p99Us: round(percentile(all, 99) / 1e3, 1),
    meanUs: round(mean / 1e3, 1),
    maxUs: round(all[all.length - 1]! / 1e3, 1)
  }
}
