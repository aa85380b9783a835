// Tree broadcast over real TLS (issue 13): N validators (default 32) in this process on 127.0.0.1, a
// leader (validator 0) broadcasting a 64 KiB Proposal per round, beside raw node:tls fan-out in the
// same run. A round ends when the last of the N-1 followers has the Proposal (no Votes are sent):
// time to all-delivered, from the call to `broadcast` (raw: before the first socket write).
//
// Sides, each its own set of sockets and validators, taking turns a block of rounds at a time (the
// order rotating per block) so that they share the machine's noise:
// - `raw`: the leader writes the same envelope frame to N-1 node:tls sockets (broadcast.ts).
// - `raw+sig`: the same with an envelope sealed per round and opened (Ed25519 verified) by each.
// - `direct`: NodeNetwork, `broadcast: { strategy: "direct" }`.
// - `tree` (default fanout, ceil(sqrt(N))), and `tree f=K` per TREE_FANOUTS: NodeNetwork, `strategy: "tree"`.
// Per side, one JSON line on stdout: median and p90 of time to all-delivered, ratios to raw, and the
// leader's bytes written per round (its upload: tree about fanout copies, direct and raw N-1). Logs
// on stderr.
//
// All validators share this process's one JS thread: every hop, verification and TLS record of the
// whole set runs on it, so a tree (a relay hop and a verification per level, receipts back to the
// origin) does more work in one place than direct does, and loopback has no upload limit to save.
// What the tree saves is the leader's upload, seen here in bytes, not in time.
//
// Run from packages/node: `npm run bench:tree`. Env: TREE_VALIDATORS (32), TREE_PAYLOAD (65536),
// TREE_BLOCKS (60), TREE_PER_BLOCK (2), TREE_WARMUP (10), TREE_FANOUTS (comma-separated, default
// "default", the config's default; "default,4" adds fanout 4), TREE_SIDES (comma-separated subset of
// the side names; raw always runs), TREE_ONE_BY_ONE=1 (start the validators one at a time).
import * as os from "node:os"
import { Bench, BenchProcess } from "@hotstuff2/testing"
import { type Harness, type NodeHarnessOptions, nodeHarness, type Round, rawHarness } from "./broadcast.js"

Bench.resultsOnStdout()

const { gcMillis, machine, now, percentile, pin, report, round } = Bench
gcMillis() // starts counting

const N = Math.max(3, Number(process.env.TREE_VALIDATORS ?? 32) || 32)
const PAYLOAD_BYTES = Number(process.env.TREE_PAYLOAD ?? 64 * 1024) || 64 * 1024
const BLOCKS = Math.max(1, Number(process.env.TREE_BLOCKS ?? 60) || 60)
const PER_BLOCK = Math.max(1, Number(process.env.TREE_PER_BLOCK ?? 2) || 2)
const WARMUP = Math.max(0, Number(process.env.TREE_WARMUP ?? 10))
const ROUND_TIMEOUT_MS = 30_000
const DEADLINE_MS = 15 * 60_000
/** A side that failed this many rounds is left out of the remaining blocks. */
const MAX_FAILURES = 3

const defaultFanout = Math.min(64, Math.max(2, Math.ceil(Math.sqrt(N))))

interface SideSpec {
  readonly name: string
  readonly impl: string
  readonly start: () => Promise<Harness>
}

const options = { payloadBytes: PAYLOAD_BYTES, votes: false }
// N (N-1) dials at once, all on this thread: with the fixtures' 2 s handshake timeout most expire on
// a loaded machine, are dialled again, and the mesh never forms (N = 32 under load 12: 8 of 992
// connection ends up after 60 s); with 30 s it forms in about 30 s. And with three sets of 32 on one
// starved thread (GC pauses of seconds), 3 missed 1 s heartbeats closed connections mid-run
// ("broadcast failed to 6 peers"): allow 15. TREE_ONE_BY_ONE=1 starts the validators one at a time
// (slower here, about 200 s a set: the larger PeerId of a pair waits `dialGrace` before dialling,
// the smaller one is in redial backoff).
const nodeOptions: NodeHarnessOptions = {
  ...options,
  fullMesh: true,
  oneByOne: process.env.TREE_ONE_BY_ONE === "1",
  configure: (config) => ({
    ...config,
    limits: { ...config.limits, handshakeTimeout: 30_000 },
    peers: { ...config.peers, missedHeartbeats: 15 }
  }),
  connectTimeoutMs: 300_000
}
const treeSides: ReadonlyArray<SideSpec> = (process.env.TREE_FANOUTS ?? "default")
  .split(",")
  .filter((f) => f === "default" || Number(f) >= 2)
  .map((f) => ({
    name: f === "default" ? "tree" : `tree f=${f}`,
    impl: `NodeNetwork tree, fanout ${f === "default" ? `${defaultFanout} (default)` : f}`,
    start: () =>
      nodeHarness(N, ROUND_TIMEOUT_MS, {
        ...nodeOptions,
        broadcast: f === "default" ? { strategy: "tree" } : { strategy: "tree", fanout: Number(f) }
      })
  }))
const allSides: ReadonlyArray<SideSpec> = [
  { name: "raw", impl: "raw node:tls fan-out", start: () => rawHarness(N, false, ROUND_TIMEOUT_MS, options) },
  {
    name: "raw+sig",
    impl: "raw node:tls fan-out + seal/open",
    start: () => rawHarness(N, true, ROUND_TIMEOUT_MS, options)
  },
  {
    name: "direct",
    impl: "NodeNetwork direct",
    start: () => nodeHarness(N, ROUND_TIMEOUT_MS, { ...nodeOptions, broadcast: { strategy: "direct" } })
  },
  ...treeSides
]
const wanted = process.env.TREE_SIDES?.split(",")
const sides = allSides.filter(
  (side) => side.name === "raw" || wanted === undefined || wanted.includes(side.name)
)

const { log, pinned } = BenchProcess.supervise("treeTls", {
  deadlineMs: DEADLINE_MS,
  stepTimeoutMs: ROUND_TIMEOUT_MS
})
// supervise pins this process to CPU 0 for two-process benchmarks; one process holding the whole
// validator set may use every CPU (GC helpers, libuv's pool), as node.bench's broadcast case does.
if (pinned) pin(process.pid, `0-${os.cpus().length - 1}`)

const loadAverage = () => os.loadavg().map((x) => round(x, 2))

interface Running {
  readonly spec: SideSpec
  readonly harness: Harness
  readonly blocks: Array<ReadonlyArray<Round>>
  /** Leader bytes written over the timed rounds, and those rounds. */
  bytes: number
  timedRounds: number
  readonly errors: Array<string>
}

const describe = (error: unknown): string => (error instanceof Error ? error.message : String(error))

/** `count` rounds of one side; a failed round is recorded and ends the block. */
const rounds = async (side: Running, count: number): Promise<ReadonlyArray<Round>> => {
  const out: Array<Round> = []
  const before = side.harness.leaderBytesWritten()
  for (let i = 0; i < count; i++) {
    try {
      out.push(await side.harness.round())
    } catch (error) {
      side.errors.push(describe(error))
      log(`${side.spec.name}: round failed: ${describe(error)}`)
      break
    }
  }
  side.bytes += side.harness.leaderBytesWritten() - before
  side.timedRounds += out.length
  return out
}

const ms = (sorted: Float64Array, p: number) => round(percentile(sorted, p) / 1e6, 2)

const main = async () => {
  const started = now()
  const loadAtStart = loadAverage()
  log(`N=${N}, ${PAYLOAD_BYTES} B payload, sides ${sides.map((s) => s.name).join(", ")}; load ${loadAtStart}`)
  const running: Array<Running> = []
  const setupFailures: Array<{ readonly side: string; readonly error: string }> = []
  try {
    for (const spec of sides) {
      const at = now()
      try {
        const harness = await spec.start()
        running.push({ spec, harness, blocks: [], bytes: 0, timedRounds: 0, errors: [] })
        log(`${spec.name}: ready in ${round(Number(now() - at) / 1e6, 0)} ms`)
      } catch (error) {
        // A set that cannot connect is reported and left out; the others still run.
        if (spec.name === "raw") throw error
        setupFailures.push({ side: spec.name, error: describe(error) })
        log(`${spec.name}: not started: ${describe(error)}`)
      }
    }
    for (const side of running) {
      await rounds(side, WARMUP)
      side.bytes = 0
      side.timedRounds = 0
    }
    log(`warmed up (${WARMUP} rounds a side); load ${loadAverage()}`)
    for (let b = 0; b < BLOCKS; b++) {
      for (let k = 0; k < running.length; k++) {
        const side = running[(b + k) % running.length]!
        if (side.errors.length >= MAX_FAILURES) continue
        side.blocks.push(await rounds(side, PER_BLOCK))
      }
      log(`block ${b + 1}/${BLOCKS} done; load ${loadAverage()}`)
    }
    const loadAtEnd = loadAverage()
    const summary = (side: Running) => {
      const all = Float64Array.from(side.blocks.flat().map((r) => r.delivered)).sort()
      const bytesPerRound = side.timedRounds === 0 ? 0 : side.bytes / side.timedRounds
      return {
        rounds: all.length,
        p50Ms: all.length === 0 ? null : ms(all, 50),
        p90Ms: all.length === 0 ? null : ms(all, 90),
        blockP50Ms: side.blocks.map((block) =>
          block.length === 0 ? null : ms(Float64Array.from(block.map((r) => r.delivered)).sort(), 50)
        ),
        leaderBytesPerRound: Math.round(bytesPerRound)
      }
    }
    const raw = summary(running[0]!)
    const rawCopyBytes = raw.leaderBytesPerRound / (N - 1)
    for (const side of running) {
      const result = summary(side)
      report({
        bench: "treeTls",
        case: `N=${N} ${PAYLOAD_BYTES / 1024}KiB Proposal, time to all-delivered`,
        side: side.spec.name,
        impl: side.spec.impl,
        validators: N,
        oneProcess: true,
        votes: false,
        ...result,
        ratioToRawP50:
          result.p50Ms === null || raw.p50Ms === null ? null : round(result.p50Ms / raw.p50Ms, 2),
        ratioToRawP90:
          result.p90Ms === null || raw.p90Ms === null ? null : round(result.p90Ms / raw.p90Ms, 2),
        leaderCopiesPerRound: rawCopyBytes > 0 ? round(result.leaderBytesPerRound / rawCopyBytes, 2) : null,
        errors: side.errors,
        load: { start: loadAtStart, end: loadAtEnd },
        gcMs: round(gcMillis(), 0),
        seconds: round(Number(now() - started) / 1e9, 1),
        ...machine()
      })
    }
    for (const failure of setupFailures)
      report({
        bench: "treeTls",
        case: `N=${N} ${PAYLOAD_BYTES / 1024}KiB Proposal, time to all-delivered`,
        side: failure.side,
        validators: N,
        notStarted: failure.error,
        load: { start: loadAtStart, end: loadAtEnd },
        ...machine()
      })
  } finally {
    for (const side of running) await side.harness.close()
  }
}

main().then(
  () => {
    process.exit(0)
  },
  (error: unknown) => {
    log(`failed: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}`)
    process.exit(1)
  }
)
