// What a validator counts and measures: Effect metrics (exported with the node's, labelled by node),
// the status a devnet table shows, and commit latency from the proposer's timestamp in the block body.
import * as Metric from "effect/Metric"
import * as MetricBoundaries from "effect/MetricBoundaries"

/** The block body this app proposes: the proposer's Clock millis (u64 BE), then filler bytes. */
export const body = (now: number, bytes: number): Uint8Array => {
  const out = new Uint8Array(Math.max(8, bytes))
  new DataView(out.buffer).setBigUint64(0, BigInt(Math.max(0, Math.floor(now))))
  return out
}

/** The proposer's Clock millis a body carries; undefined for a body too short to hold one. */
export const proposedAt = (body: Uint8Array): number | undefined =>
  body.length < 8 ? undefined : Number(new DataView(body.buffer, body.byteOffset, 8).getBigUint64(0))

export const metrics = {
  committedHeight: Metric.gauge("hotstuff2_consensus_committed_height", {
    description: "height of the last committed block",
    bigint: true
  }),
  view: Metric.gauge("hotstuff2_consensus_view", {
    description: "the view this validator is in",
    bigint: true
  }),
  commits: Metric.counter("hotstuff2_consensus_commits", {
    description: "blocks committed",
    incremental: true
  }),
  timeouts: Metric.counter("hotstuff2_consensus_view_timeouts", {
    description: "views this validator timed out in",
    incremental: true
  }),
  refused: Metric.counter("hotstuff2_consensus_refused", {
    description: "consensus messages and sync answers refused, by what",
    incremental: true
  }),
  synced: Metric.counter("hotstuff2_consensus_synced_blocks", {
    description: "blocks fetched by block sync",
    incremental: true
  }),
  commitLatency: Metric.histogram(
    "hotstuff2_consensus_commit_latency_ms",
    MetricBoundaries.exponential({ start: 1, factor: 2, count: 16 }),
    "proposal (the proposer's clock) to commit on this validator, per block"
  )
}

/** The last `size` commit latencies, for p50 and p99 over a sliding window. */
export class LatencyWindow {
  private readonly values: Array<number> = []
  private next = 0
  constructor(private readonly size = 1024) {}

  add(value: number): void {
    if (this.values.length < this.size) this.values.push(value)
    else {
      this.values[this.next] = value
      this.next = (this.next + 1) % this.size
    }
  }

  /** The q-quantile (0..1) of the window; undefined while it is empty. */
  quantile(q: number): number | undefined {
    if (this.values.length === 0) return undefined
    const sorted = [...this.values].sort((a, b) => a - b)
    return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]
  }
}
