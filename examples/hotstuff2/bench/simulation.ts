// Commit latency of the reference app in simulated time: `size` validators (default 100) on
// TestCluster under TestClock, every link `latency` ms one way (no jitter, no loss, no bandwidth
// limit), the real NodeNetwork and Consensus over it. After a warm-up (the mesh forms, the first
// views may time out) every validator's commits are followed for `blocks` blocks: latency = the
// Clock at commit minus the proposer's Clock in the block body, in simulated ms, since the Clock is
// the TestClock. Processing costs no simulated time, so anything above the protocol's message
// delays comes from the network model or from the protocol waiting.
import * as Clock from "effect/Clock"
import * as Effect from "effect/Effect"
import * as Stream from "effect/Stream"
import * as TestContext from "effect/TestContext"
import { payloadBody } from "../src/core/crypto.js"
import { proposedAt } from "../src/internal/observe.js"
import * as ConsensusCluster from "../test/support/cluster.js"

export interface SimulationOptions {
  readonly size: number
  /** One-way latency of every link, simulated ms. */
  readonly latency: number
  /** Blocks committed everywhere after the warm-up, to measure. */
  readonly blocks: number
  /** Blocks committed everywhere before measuring. */
  readonly warmupBlocks: number
  readonly seed: number
  readonly log: (text: string) => void
}

const STEP_MS = 10

const quantile = (sorted: ReadonlyArray<number>, q: number): number =>
  sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))]!

export const simulate = (options: SimulationOptions) =>
  Effect.gen(function* () {
    const { size, latency, log } = options
    const wallStart = performance.now()
    const c = yield* ConsensusCluster.make({
      size,
      seed: options.seed,
      link: { latency, jitter: 0, loss: 0 },
      // A view timer well above a view's 2 x latency, and above the time the mesh takes to form.
      validator: { baseTimeout: Math.max(2_000, 40 * latency), payloadBytes: 256 }
    })
    const simStart = yield* Clock.currentTimeMillis
    log(`simulation: ${size} validators made in ${((performance.now() - wallStart) / 1000).toFixed(1)} s`)
    const all = Array.from({ length: size }, (_, i) => i)
    yield* c.until(
      `${options.warmupBlocks} blocks committed everywhere`,
      Effect.map(c.minHeight(), (h) => h >= BigInt(options.warmupBlocks)),
      600_000,
      STEP_MS
    )
    const warmWall = performance.now()
    const t0 = yield* Clock.currentTimeMillis
    const h0 = yield* c.minHeight()
    const before = yield* Effect.forEach(all, (i) => c.status(i))
    log(
      `simulation: warm at height ${h0} after ${t0 - simStart} simulated ms, ` +
        `${((warmWall - wallStart) / 1000).toFixed(1)} s of wall time`
    )
    // Every validator's commits from here on, timed on the (Test)Clock by a fiber of this scope (a
    // descendant: TestClock.adjust waits for it to settle before it moves time on).
    const samples: Array<number> = []
    for (const i of all) {
      const stream = yield* c.consensus(i).commits
      yield* Effect.forkScoped(
        Stream.runForEach(stream, (committed) =>
          Effect.map(Clock.currentTimeMillis, (at) => {
            const proposed = proposedAt(payloadBody(committed.block.payload))
            if (proposed !== undefined) samples.push(at - proposed)
          })
        )
      )
    }
    const cpuBefore = process.cpuUsage()
    yield* c.until(
      `${options.blocks} more blocks committed everywhere`,
      Effect.map(c.minHeight(), (h) => h >= h0 + BigInt(options.blocks)),
      600_000,
      STEP_MS
    )
    const t1 = yield* Clock.currentTimeMillis
    const h1 = yield* c.minHeight()
    const cpu = process.cpuUsage(cpuBefore)
    const wall = (performance.now() - warmWall) / 1000
    const after = yield* Effect.forEach(all, (i) => c.status(i))
    const { common } = yield* c.checkSafety
    const sorted = [...samples].sort((a, b) => a - b)
    const views = Number(after.reduce((m, s) => (s.view > m ? s.view : m), 0n) - before[0]!.view)
    const timeouts = after.reduce((n, s, i) => n + s.timeouts - before[i]!.timeouts, 0)
    return {
      size,
      linkLatencyMs: latency,
      blocks: Number(h1 - h0),
      samples: samples.length,
      commitLatencyP50Ms: quantile(sorted, 0.5),
      commitLatencyP99Ms: quantile(sorted, 0.99),
      commitLatencyMinMs: sorted[0],
      commitLatencyMaxMs: sorted[sorted.length - 1],
      // Blocks per simulated second: one per view when no view fails (a view is two delays).
      commitsPerSimulatedSecond: Number(h1 - h0) / ((t1 - t0) / 1000),
      simulatedMs: t1 - t0,
      views,
      timeouts,
      // What the run cost in real time: the processing a simulated network does not charge.
      wallSeconds: wall,
      wallSecondsPerBlock: wall / Number(h1 - h0),
      cpuSecondsPerBlock: (cpu.user + cpu.system) / 1e6 / Number(h1 - h0),
      setupWallSeconds: (warmWall - wallStart) / 1000,
      warmupSimulatedMs: t0 - simStart,
      commonHeight: Number(common),
      // The status window (every commit of the run, warm-up included), for comparison.
      statusP50Ms: after.map((s) => s.latency.p50 ?? 0).sort((a, b) => a - b)[size >> 1],
      statusP99Ms: after.map((s) => s.latency.p99 ?? 0).sort((a, b) => a - b)[size >> 1]
    }
  }).pipe(Effect.scoped, Effect.provide(TestContext.TestContext))
