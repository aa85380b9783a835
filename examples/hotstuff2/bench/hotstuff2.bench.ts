// `npm run bench` in examples/hotstuff2 (issue 15): the reference HotStuff-2 app end to end.
//
// - TLS devnet, 4 and 16 validators (BENCH_VALIDATORS): N validator processes on 127.0.0.1 over TLS
//   (`Devnet.run`, compiled), WARMUP s after all are up, then MEASURE s measured. Per validator, from
//   its status reports: commits/s over the measured window (the first report after the warm-up to
//   the last before the stop), and commit latency p50/p99 of its last report (proposer's clock in
//   the block body to commit here, ms resolution, over its last 1,024 commits: all of them inside
//   the window when it committed at least 1,024 there, `latencyWindowMeasured`). Reported: medians
//   across validators, timeouts in the window, the load average before and after, and a raw node:tls
//   round trip between two processes measured just before (rawTls.ts), for the ratios: commit
//   latency / RTT, and / (5 one-way delays = 2.5 RTT).
// - Simulation (simulation.ts): 100 validators (BENCH_SIM_SIZE) on TestCluster under TestClock, 50 ms
//   links (BENCH_SIM_LATENCY), BENCH_SIM_BLOCKS (15) blocks after BENCH_SIM_WARMUP (3): commit
//   latency p50/p99 in simulated ms against the protocol's 5 one-way delays.
//
// Why 5: a block B proposed in view v commits (two-chain rule, Replica.checkCommit) once a
// certificate of view v+1 is known for its child; votes go only to the next leader, so a replica
// learns that certificate from the proposal of view v+2 that carries it: proposal(v), votes to
// leader(v+1), proposal(v+1), votes to leader(v+2), proposal(v+2) = 5 one-way delays. The leader of
// v+2 forms the certificate itself and commits after 4 (one commit in N).
//
// JSON lines on stdout, progress on stderr. Env: BENCH_CASES ("tls,sim"), BENCH_VALIDATORS ("4,16"),
// BENCH_WARMUP (5 s), BENCH_MEASURE (20 s), BENCH_SIM_SIZE (100), BENCH_SIM_LATENCY (50),
// BENCH_SIM_BLOCKS (15), BENCH_SIM_WARMUP (3), BENCH_RTT_COUNT (2,000), BENCH_BASE_TIMEOUT
// (1,000 ms, the devnet's view timer). A devnet that fails still reports (`ok: false`, `failure`). About 3 minutes in all.
import { execFileSync } from "node:child_process"
import * as os from "node:os"
import { Bench } from "@hotstuff2/testing"
import * as Effect from "effect/Effect"
import * as Devnet from "../src/devnet/Devnet.js"
import type { StatusReport } from "../src/devnet/protocol.js"
import { measureRtt, type RttResult } from "./rawTls.js"
import { simulate } from "./simulation.js"

Bench.resultsOnStdout()

const BENCH = "hotstuff2"
/** One-way message delays from a proposal to its block's commit on a replica (see above). */
const DELAYS_TO_COMMIT = 5

const env = (name: string, fallback: number) => {
  const value = Number(process.env[name] ?? fallback)
  if (!Number.isFinite(value) || value < 0)
    throw new Error(`${name} must be a number, got ${process.env[name]}`)
  return value
}
const cases = (process.env.BENCH_CASES ?? "tls,sim").split(",")
const validatorCounts = (process.env.BENCH_VALIDATORS ?? "4,16").split(",").map(Number)
const warmupS = env("BENCH_WARMUP", 5)
const measureS = env("BENCH_MEASURE", 20)
const rttCount = env("BENCH_RTT_COUNT", 2_000)
/** The validators' view timer after progress (the devnet's default). */
const baseTimeout = env("BENCH_BASE_TIMEOUT", 1_000)
const STATUS_INTERVAL_MS = 500

const log = (text: string) => void process.stderr.write(`[${BENCH}] ${text}\n`)

const median = (xs: ReadonlyArray<number>) => (xs.length === 0 ? Number.NaN : Bench.median(xs))
const load = () => os.loadavg().map((x) => Bench.round(x, 2))
const commit = (() => {
  try {
    return execFileSync("git", ["rev-parse", "--short", "HEAD"], { encoding: "utf8" }).trim()
  } catch {
    return "unknown"
  }
})()
const machine = { ...Bench.machine(), commit }

/** The window's two ends in one validator's reports: the first at or after `from`, the last at or before `to`. */
const windowOf = (reports: ReadonlyArray<StatusReport>, from: number, to: number) => {
  const first = reports.find((r) => r.at >= from)
  const last = [...reports].reverse().find((r) => r.at <= to)
  return first === undefined || last === undefined || last.at <= first.at ? undefined : { first, last }
}

const tlsCase = async (n: number) => {
  const rtt: RttResult = await measureRtt(rttCount)
  log(`raw TLS RTT between two processes: p50 ${rtt.p50Us} us, p99 ${rtt.p99Us} us`)
  const loadBefore = load()
  log(`devnet: ${n} validators, ${warmupS} s warm-up + ${measureS} s measured; load ${loadBefore.join(" ")}`)
  // A devnet that fails (a validator dies, nothing committed everywhere) still gives its figures.
  const outcome = await Effect.runPromise(
    Devnet.run({
      validators: n,
      duration: `${warmupS + measureS} seconds`,
      baseTimeout,
      statusInterval: STATUS_INTERVAL_MS,
      write: (text) => void process.stderr.write(text),
      log: (text) => void process.stderr.write(text),
      tty: false,
      startTimeout: "150 seconds",
      handleSignals: false
    }).pipe(
      Effect.map((result) => ({ result, failure: undefined as string | undefined })),
      Effect.catchTag("DevnetFailed", (e) =>
        e.result === undefined ? Effect.fail(e) : Effect.succeed({ result: e.result, failure: e.reason })
      )
    )
  )
  const { result, failure } = outcome
  const loadAfter = load()
  const startedAt = result.startedAt ?? Date.now()
  const from = startedAt + warmupS * 1000
  const to = startedAt + result.seconds * 1000
  const windows = result.validators.map((v) => windowOf(v.reports, from, to))
  const measured = windows.flatMap((w) => (w === undefined ? [] : [w]))
  const rates = measured.map(
    ({ first, last }) => (last.status.commits - first.status.commits) / ((last.at - first.at) / 1000)
  )
  const p50s = measured.flatMap(({ last }) =>
    last.status.latency.p50 === undefined ? [] : [last.status.latency.p50]
  )
  const p99s = measured.flatMap(({ last }) =>
    last.status.latency.p99 === undefined ? [] : [last.status.latency.p99]
  )
  const latencyP50Ms = median(p50s)
  const latencyP99Ms = median(p99s)
  const rttMs = rtt.p50Us / 1000
  return {
    bench: BENCH,
    case: `tls-${n}`,
    validators: n,
    ok: failure === undefined,
    ...(failure === undefined ? {} : { failure }),
    baseTimeoutMs: baseTimeout,
    measuredSeconds: Bench.round(median(measured.map(({ first, last }) => (last.at - first.at) / 1000)), 1),
    validatorsMeasured: measured.length,
    commitsPerSecond: Bench.round(median(rates), 1),
    commitsPerSecondMin: Bench.round(Math.min(...rates), 1),
    commitLatencyP50Ms: latencyP50Ms,
    commitLatencyP99Ms: latencyP99Ms,
    // Whether every validator's latency window (its last 1,024 commits) lies inside the measured one.
    latencyWindowMeasured: measured.every(
      ({ first, last }) => last.status.commits - first.status.commits >= 1024
    ),
    timeoutsMeasured: measured.reduce(
      (t, { first, last }) => t + last.status.timeouts - first.status.timeouts,
      0
    ),
    timeoutsTotal: result.validators.reduce((t, v) => t + (v.status?.timeouts ?? 0), 0),
    committedHeight: result.agreement.height,
    rawTlsRttP50Us: rtt.p50Us,
    rawTlsRttP99Us: rtt.p99Us,
    latencyP50PerRtt: Bench.round(latencyP50Ms / rttMs, 1),
    latencyP50PerFiveDelays: Bench.round(latencyP50Ms / ((DELAYS_TO_COMMIT * rttMs) / 2), 1),
    // A view is two one-way delays when nothing waits: the rate that raw RTT alone would allow.
    commitsPerSecondRawRttBound: Math.round(1000 / rttMs),
    loadBefore,
    loadAfter,
    ...machine
  }
}

const simCase = async () => {
  const size = env("BENCH_SIM_SIZE", 100)
  const latency = env("BENCH_SIM_LATENCY", 50)
  log(`simulation: ${size} validators, ${latency} ms links; load ${load().join(" ")}`)
  const loadBefore = load()
  const r = await Effect.runPromise(
    simulate({
      size,
      latency,
      blocks: env("BENCH_SIM_BLOCKS", 15),
      warmupBlocks: env("BENCH_SIM_WARMUP", 3),
      seed: 1,
      log
    })
  )
  const theoryMs = DELAYS_TO_COMMIT * latency
  return {
    bench: BENCH,
    case: `sim-${size}`,
    ...r,
    theoryMs,
    theoryDelays: DELAYS_TO_COMMIT,
    p50PerTheory: Bench.round(r.commitLatencyP50Ms / theoryMs, 3),
    p99PerTheory: Bench.round(r.commitLatencyP99Ms / theoryMs, 3),
    // Simulated ms above the message delays: processing is free in simulated time, so this is waiting.
    p50AboveTheoryMs: r.commitLatencyP50Ms - theoryMs,
    commitsPerSimulatedSecondTheory: 1000 / (2 * latency),
    wallSeconds: Bench.round(r.wallSeconds, 1),
    wallSecondsPerBlock: Bench.round(r.wallSecondsPerBlock, 2),
    cpuSecondsPerBlock: Bench.round(r.cpuSecondsPerBlock, 2),
    setupWallSeconds: Bench.round(r.setupWallSeconds, 1),
    commitsPerSimulatedSecond: Bench.round(r.commitsPerSimulatedSecond, 2),
    loadBefore,
    loadAfter: load(),
    ...machine
  }
}

const main = async () => {
  log(
    `uptime: ${os
      .loadavg()
      .map((x) => x.toFixed(2))
      .join(" ")} on ${os.cpus().length} CPUs; commit ${commit}`
  )
  if (cases.includes("tls")) for (const n of validatorCounts) Bench.report(await tlsCase(n))
  if (cases.includes("sim")) Bench.report(await simCase())
}

main().then(
  () => process.exit(0),
  (error) => {
    log(`failed: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}`)
    process.exit(1)
  }
)
