// Broadcast at scale in simulated time (issue 13): the real stack (registry, peer manager over
// MemoryTransport, broadcaster) for every validator, on one SimulatedNetwork under TestClock, so
// every time below is read from the Clock, exactly, and only the wall time and the heap are this
// machine's.
//
// Network: every link 50 ms one way, every host's upload 125,000,000 B/s (1 Gbit/s, `setUpload`),
// the broadcasters' `uploadBytesPerSecond` the same. The leader is validator 0; the proposal carries
// 256 KiB of payload.
//
// Parts (env BENCH_ONLY, comma-separated; default `timing,load`):
// - `timing`, per size N (argv, default 100 300 1000): validators in budget mode (`maxConnections`
//   64, fewer than the set), so only wanted peers are dialled. Pre-warmed, before anything is
//   measured: the leader wants every validator (tag "bench"), every other validator wants the leader
//   and its children in view 1's tree (the tree the measured broadcasts take), and the clock runs
//   until each of those connections is up; then one tree broadcast in view 1, let settle (receipts,
//   RTTs, the origin's learned completion time). Measured, in view 1: a tree broadcast, then a direct
//   one, each let settle (1 s and 0.3 s after the last delivery): simulated ms until the last
//   validator delivered, the leader's upload (slot bytes its broadcaster queued, and bytes its host
//   put on the network, heartbeats and framing included), the origin's repairs; wall and CPU time.
//   For the largest N, then a round with votes back: a tree broadcast, every validator sending a
//   Vote to the leader on delivery; its wall and CPU time, the peak heap.
//   BENCH_FANOUT: the trees' fanout (default ceil(sqrt(N)) within [2, 64]).
//   BENCH_WAIT_BEFORE_WARMUP_MS: simulated time to let heartbeats measure RTTs before the warm-up
//   broadcast (default 0). BENCH_CPU_PROFILE=<file>: a CPU profile of the round with votes back.
// - `load`, per size in BENCH_LOAD_SIZES (default 100): full mesh (default peers config), one origin
//   (validator 0), a tree broadcast in each of 100 views (BENCH_LOAD_VIEWS), 300 ms apart after the
//   last delivery; copies each validator relayed per view, summarised.
// - `load-budget` (not in the default): the same with `maxConnections` 64, the leader and every
//   validator connected beforehand, tree edges dialled on demand (relays' first sends fail, the
//   origin repairs): repairs per view as the connections a tree needs come up.
// Heap: `heapUsed` sampled every 20 ms of wall time (peak), and after a forced GC with the cluster up.
//
// Run from packages/broadcast: `npm run bench` (tsc -b bench, then node --expose-gc
// --max-old-space-size=8192 dist/bench/broadcast.bench.js; about 20 minutes on a loaded 2 vCPU
// machine, most of it N = 1,000 and the 100 views). JSON lines on stdout, progress on stderr.
import * as fs from "node:fs"
import * as inspector from "node:inspector"
import * as os from "node:os"
import { Bench } from "@hotstuff2/testing"
import { SimulatedNetwork } from "@hotstuff2/transport"
import type { Identity } from "@hotstuff2/wire"
import * as Clock from "effect/Clock"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as Logger from "effect/Logger"
import * as LogLevel from "effect/LogLevel"
import * as Scope from "effect/Scope"
import * as TestClock from "effect/TestClock"
import * as TestContext from "effect/TestContext"
import { defaultFanout } from "../src/internal/tree/layout.js"
import { treeOf as fixtureTree, hostOf, key, proposal } from "../test/fixtures/cluster.js"
import { reset, startValidator, type Validator } from "./validators.js"

Bench.resultsOnStdout()

const LATENCY_MS = 50
const UPLOAD = 125_000_000
const PAYLOAD = 256 * 1024
const MAX_CONNECTIONS = 64
/** After a tree's last delivery: past the first repair round (twice the expected time, about 0.6 s at N = 1,000). */
const SETTLE_MS = 1000
/** After a direct broadcast's last delivery (nothing to repair). */
const SETTLE_DIRECT_MS = 300
const STEP_MS = 10
/** Between views of the relay-load part, after the last delivery: past the receipts and the repair timer. */
const LOAD_SETTLE_MS = 300

const numbers = (text: string | undefined, fallback: Array<number>) => {
  const xs = (text ?? "")
    .split(/[ ,]+/)
    .map(Number)
    .filter((n) => Number.isInteger(n) && n > 1)
  return xs.length > 0 ? xs : fallback
}
const sizes = numbers(process.argv.slice(2).join(","), [100, 300, 1000])
const only = new Set((process.env.BENCH_ONLY ?? "timing,load").split(","))
const loadSizes = numbers(process.env.BENCH_LOAD_SIZES, [100])
const loadViews = Number(process.env.BENCH_LOAD_VIEWS ?? 100)

const log = (line: string) => process.stderr.write(`broadcast-bench: ${line}\n`)
const emit = (record: Record<string, unknown>) => process.stdout.write(`${JSON.stringify(record)}\n`)

const gc = (globalThis as { gc?: () => void }).gc
if (gc === undefined) throw new Error("run with node --expose-gc")
const heapAfterGc = () => {
  for (let i = 0; i < 3; i++) gc()
  return process.memoryUsage().heapUsed
}
const MiB = (bytes: number) => Math.round(bytes / 2 ** 20)

// Peak heap, sampled on the wall clock while the simulation runs (TestClock steps yield to timers).
let peakHeap = 0
let peakRss = 0
const sampler = setInterval(() => {
  const m = process.memoryUsage()
  peakHeap = Math.max(peakHeap, m.heapUsed)
  peakRss = Math.max(peakRss, m.rss)
}, 20)
sampler.unref()
const resetPeaks = () => {
  const m = process.memoryUsage()
  peakHeap = m.heapUsed
  peakRss = m.rss
}

// BENCH_CPU_PROFILE=<file>: a CPU profile of the round with votes back, written to <file>.
const profileFile = process.env.BENCH_CPU_PROFILE
const session = profileFile === undefined ? undefined : new inspector.Session()
session?.connect()
const post = (method: string) =>
  new Promise<unknown>((resolve, reject) =>
    session!.post(method, (error, result) => (error ? reject(error) : resolve(result)))
  )
const profileStart = Effect.promise(async () => {
  if (session === undefined) return
  await post("Profiler.enable")
  await post("Profiler.start")
})
const profileStop = Effect.promise(async () => {
  if (session === undefined || profileFile === undefined) return
  const { profile } = (await post("Profiler.stop")) as { profile: unknown }
  fs.writeFileSync(profileFile, JSON.stringify(profile))
  log(`cpu profile: ${profileFile}`)
})

const wall = () => performance.now()
const elapsed = (since: number) => Math.round(wall() - since)

/** Steps the TestClock until `done` holds (checked after every step); false if `within` ms passed first. */
const stepUntil = (done: () => boolean | Effect.Effect<boolean>, within: number, step = STEP_MS) =>
  Effect.gen(function* () {
    for (let t = 0; t <= within; t += step) {
      const d = done()
      if (typeof d === "boolean" ? d : yield* d) return true
      yield* TestClock.adjust(step)
    }
    return false
  })

const advance = (millis: number, step = STEP_MS) =>
  Effect.gen(function* () {
    for (let t = 0; t < millis; t += step) yield* TestClock.adjust(step)
  })

/** The fanout of every tree: BENCH_FANOUT, or the default for the set's size. */
const fanoutFor = (size: number): number =>
  process.env.BENCH_FANOUT === undefined ? defaultFanout(size) : Number(process.env.BENCH_FANOUT)

const treeOf = (ids: ReadonlyArray<Identity.Identity>, origin: Identity.Identity, view: bigint) =>
  fixtureTree(ids, origin, view, fanoutFor(ids.length))

/** Starts `size` validators (in the current scope) with their hosts' upload limited. */
const startValidators = (size: number, peers: Record<string, unknown>) =>
  Effect.gen(function* () {
    const network = yield* SimulatedNetwork.SimulatedNetwork
    const ids = Array.from({ length: size }, (_, i) => key(i + 1))
    const validators: Array<Validator> = []
    const broadcast = { strategy: "tree" as const, uploadBytesPerSecond: UPLOAD, fanout: fanoutFor(size) }
    for (const id of ids) {
      validators.push(yield* startValidator(id, ids, { broadcast, peers }))
      yield* network.setUpload(hostOf(id), UPLOAD)
      if (validators.length % 250 === 0) log(`N=${size}: ${validators.length} validators started`)
    }
    return { ids, validators, network }
  })

/** Bytes `from` has put on the network so far (delivered units, every link out of its host). */
const uploadedBy = (
  network: SimulatedNetwork.SimulatedNetworkShape,
  from: Identity.Identity,
  ids: ReadonlyArray<Identity.Identity>
) =>
  Effect.reduce(ids, 0, (sum, id) =>
    id === from
      ? Effect.succeed(sum)
      : Effect.map(network.linkStats(hostOf(from), hostOf(id)), (s) => sum + s.deliveredBytes)
  )

interface Round {
  readonly strategy: "direct" | "tree"
  readonly lastDeliveryMs: number
  readonly medianDeliveryMs: number
  readonly delivered: number
  readonly duplicates: number
  readonly leaderSlotBytes: number
  readonly leaderUploadBytes: number
  readonly repairs: number
  readonly relayed: number
  readonly relays: number
  readonly wallMs: number
  /** CPU time of this process over the same span (user + system): less sensitive to a shared machine. */
  readonly cpuMs: number
}

/**
 * One broadcast of the 256 KiB proposal by `validators[0]`, stepped until every other validator
 * delivered it (and, with `votes`, until the leader has every Vote), then `settle` ms more.
 */
const round = (
  ids: ReadonlyArray<Identity.Identity>,
  validators: ReadonlyArray<Validator>,
  network: SimulatedNetwork.SimulatedNetworkShape,
  view: bigint,
  strategy: "direct" | "tree",
  fill: number,
  options: { readonly votes?: boolean; readonly settle?: number } = {}
) =>
  Effect.gen(function* () {
    const leader = validators[0]!
    const others = validators.slice(1)
    reset(validators)
    for (const v of others) v.voteTo = options.votes === true ? leader.id.peerId : undefined
    const uploadBefore = yield* uploadedBy(network, leader.id, ids)
    const started = wall()
    const cpuStarted = Bench.cpuMicros()
    const t0 = yield* Clock.currentTimeMillis
    const receipt = yield* leader.broadcaster.broadcast(proposal(view, leader.id.peerId, PAYLOAD, fill), {
      strategy
    })
    const allDelivered = () => others.every((v) => v.tally.proposalAt !== undefined)
    const allVoted = () => leader.tally.votes >= others.length
    const ok = yield* stepUntil(
      options.votes === true ? () => allDelivered() && allVoted() : allDelivered,
      60_000
    )
    const wallMs = elapsed(started)
    const cpuMs = Math.round((Bench.cpuMicros() - cpuStarted) / 1000)
    if (!ok) log(`view ${view} ${strategy}: not everyone delivered within 60 s of simulated time`)
    const times = others.map((v) => (v.tally.proposalAt ?? Number.NaN) - t0).sort((a, b) => a - b)
    yield* advance(options.settle ?? SETTLE_MS)
    for (const v of others) v.voteTo = undefined
    const uploadAfter = yield* uploadedBy(network, leader.id, ids)
    const result: Round = {
      strategy: receipt.strategy,
      lastDeliveryMs: times[times.length - 1]!,
      medianDeliveryMs: Bench.median(times),
      delivered: others.filter((v) => v.tally.proposals > 0).length,
      duplicates: others.reduce((n, v) => n + Math.max(0, v.tally.proposals - 1), 0),
      leaderSlotBytes: leader.tally.sentBytes + leader.tally.relayedBytes,
      leaderUploadBytes: uploadAfter - uploadBefore,
      repairs: leader.tally.repaired,
      relayed: others.reduce((n, v) => n + v.tally.relayed, 0),
      relays: others.filter((v) => v.tally.relayed > 0).length,
      wallMs,
      cpuMs
    }
    return { result, votes: leader.tally.votes, lastVoteMs: (leader.tally.voteAt ?? Number.NaN) - t0 }
  })

/** Runs `body` on a fresh simulated network in a scope of its own, closed afterwards. */
const onFreshNetwork = <A>(
  seed: number,
  body: Effect.Effect<A, unknown, Scope.Scope | SimulatedNetwork.SimulatedNetwork>
) =>
  Effect.gen(function* () {
    const scope = yield* Scope.make()
    const network = Layer.buildWithScope(
      SimulatedNetwork.SimulatedNetwork.layer({ seed, defaults: { latency: LATENCY_MS } }),
      scope
    )
    const result = yield* Effect.flatMap(network, (context) => Effect.provide(body, context)).pipe(
      Scope.extend(scope)
    )
    yield* Scope.close(scope, Exit.void)
    return result
  })

const timing = (size: number, votes: boolean) =>
  onFreshNetwork(
    13,
    Effect.gen(function* () {
      resetPeaks()
      const heapBefore = heapAfterGc()
      const started = wall()
      const cpuStarted = Bench.cpuMicros()
      const { ids, validators, network } = yield* startValidators(size, { maxConnections: MAX_CONNECTIONS })
      const leader = validators[0]!
      const view = 1n
      const tree = treeOf(ids, leader.id, view)
      // Pre-warm: the connections the measured rounds use, and only those.
      const required = new Map<Validator, ReadonlyArray<Identity.PeerId>>()
      required.set(
        leader,
        ids.slice(1).map((id) => id.peerId)
      )
      for (const v of validators.slice(1)) {
        required.set(v, [leader.id.peerId, ...tree.children(v.id.peerId)])
      }
      for (const [v, peers] of required) yield* v.manager.want("bench", peers)
      const builtWallMs = elapsed(started)
      const t0 = yield* Clock.currentTimeMillis
      const connectedAll = Effect.gen(function* () {
        for (const [v, peers] of required) {
          const connected = new Set(yield* v.manager.connected)
          if (!peers.every((p) => connected.has(p))) return false
        }
        return true
      })
      const warm = yield* stepUntil(() => connectedAll, 300_000, 100)
      const connectSimulatedMs = (yield* Clock.currentTimeMillis) - t0
      const connections = (yield* Effect.forEach(validators, (v) => v.manager.connected)).reduce(
        (n, c) => n + c.length,
        0
      )
      log(
        `N=${size}: built in ${builtWallMs} ms wall; wanted connections up: ${warm} after ${connectSimulatedMs} simulated ms, ${elapsed(started)} ms wall; ${connections / 2} connections`
      )
      // Diagnostic: let heartbeats measure RTTs before the first tree broadcast (default 0: not).
      yield* advance(Number(process.env.BENCH_WAIT_BEFORE_WARMUP_MS ?? 0), 100)
      const warmup = yield* round(ids, validators, network, view, "tree", 1)
      log(
        `N=${size}: warm-up tree broadcast: last delivery ${warmup.result.lastDeliveryMs} ms, repairs ${warmup.result.repairs}`
      )
      const tree1 = yield* round(ids, validators, network, view, "tree", 2)
      log(`N=${size}: tree ${JSON.stringify(tree1.result)}`)
      const direct1 = yield* round(ids, validators, network, view, "direct", 3, { settle: SETTLE_DIRECT_MS })
      log(`N=${size}: direct ${JSON.stringify(direct1.result)}`)
      const common = {
        bench: "broadcast-sim",
        nodes: size,
        payloadBytes: PAYLOAD,
        latencyMs: LATENCY_MS,
        uploadBytesPerSecond: UPLOAD,
        fanout: fanoutFor(size),
        maxConnections: MAX_CONNECTIONS,
        prewarmed:
          "leader->all, each->leader, each->its children in view 1's tree; then one tree broadcast in view 1",
        connections: connections / 2,
        connectSimulatedMs
      }
      for (const r of [tree1.result, direct1.result]) emit({ ...common, case: r.strategy, ...r })
      emit({
        ...common,
        case: "ratio",
        treeOverDirect: Bench.round(tree1.result.lastDeliveryMs / direct1.result.lastDeliveryMs),
        leaderUploadTreeOverDirect: Bench.round(tree1.result.leaderSlotBytes / direct1.result.leaderSlotBytes)
      })
      if (votes) {
        yield* profileStart
        const before = wall()
        const withVotes = yield* round(ids, validators, network, view, "tree", 4, {
          votes: true,
          settle: 100
        })
        const roundWallMs = elapsed(before)
        yield* profileStop
        const heapLive = heapAfterGc() - heapBefore
        emit({
          ...common,
          case: "round-with-votes",
          strategy: withVotes.result.strategy,
          lastDeliveryMs: withVotes.result.lastDeliveryMs,
          votes: withVotes.votes,
          lastVoteMs: withVotes.lastVoteMs,
          repairs: withVotes.result.repairs,
          roundWallMs,
          roundStepWallMs: withVotes.result.wallMs,
          roundStepCpuMs: withVotes.result.cpuMs,
          totalWallMs: elapsed(started),
          totalCpuMs: Math.round((Bench.cpuMicros() - cpuStarted) / 1000),
          peakHeapMiB: MiB(peakHeap),
          peakRssMiB: MiB(peakRss),
          heapLiveAfterGcMiB: MiB(heapLive),
          maxOldSpaceSizeMiB: maxOldSpace(),
          loadavg: loadavg()
        })
      } else {
        emit({
          ...common,
          case: "cost",
          totalWallMs: elapsed(started),
          totalCpuMs: Math.round((Bench.cpuMicros() - cpuStarted) / 1000),
          peakHeapMiB: MiB(peakHeap),
          peakRssMiB: MiB(peakRss),
          heapLiveAfterGcMiB: MiB(heapAfterGc() - heapBefore),
          loadavg: loadavg()
        })
      }
    })
  )

/** Gini coefficient of non-negative counts (0: all equal; toward 1: one does everything). */
const gini = (xs: ReadonlyArray<number>) => {
  const s = [...xs].sort((a, b) => a - b)
  const total = s.reduce((a, b) => a + b, 0)
  if (total === 0) return 0
  let weighted = 0
  for (let i = 0; i < s.length; i++) weighted += (i + 1) * s[i]!
  return (2 * weighted) / (s.length * total) - (s.length + 1) / s.length
}

const load = (size: number, views: number, budget: boolean) =>
  onFreshNetwork(
    17,
    Effect.gen(function* () {
      resetPeaks()
      const started = wall()
      const { ids, validators, network } = yield* startValidators(
        size,
        budget ? { maxConnections: MAX_CONNECTIONS } : {}
      )
      const leader = validators[0]!
      // Full mesh: every validator dials every other. Budget: only the leader and every validator
      // are connected (wanted both ways, as validators want the next leaders); tree edges are dialled
      // on demand, when a relay first sends to a child it is not connected to (the origin repairs).
      const required = new Map<Validator, ReadonlyArray<Identity.PeerId>>()
      for (const v of validators) {
        required.set(
          v,
          !budget
            ? ids.filter((id) => id !== v.id).map((id) => id.peerId)
            : v === leader
              ? ids.slice(1).map((id) => id.peerId)
              : [leader.id.peerId]
        )
        if (budget) yield* v.manager.want("bench", required.get(v)!)
      }
      const meshed = yield* stepUntil(
        () =>
          Effect.gen(function* () {
            for (const [v, peers] of required) {
              const connected = new Set(yield* v.manager.connected)
              if (!peers.every((p) => connected.has(p))) return false
            }
            return true
          }),
        300_000,
        100
      )
      log(
        `N=${size}: ${budget ? "leader connections" : "full mesh"} ${meshed} in ${elapsed(started)} ms wall`
      )
      // One warm-up view (0) outside the figures.
      yield* round(ids, validators, network, 0n, "tree", 1, { settle: 500 })
      const others = validators.slice(1)
      const totals = new Array<number>(others.length).fill(0)
      const relayViews = new Array<number>(others.length).fill(0)
      const perView: Array<number> = []
      const relaysPerView: Array<number> = []
      const lastDelivery: Array<number> = []
      let repairs = 0
      const repairsByView: Array<number> = []
      let duplicates = 0
      let maxPerView = 0
      const loadStarted = wall()
      for (let view = 1; view <= views; view++) {
        const { result } = yield* round(ids, validators, network, BigInt(view), "tree", (view % 200) + 2, {
          settle: LOAD_SETTLE_MS
        })
        others.forEach((v, i) => {
          totals[i]! += v.tally.relayed
          if (v.tally.relayed > 0) relayViews[i]!++
          maxPerView = Math.max(maxPerView, v.tally.relayed)
        })
        perView.push(result.relayed)
        relaysPerView.push(result.relays)
        lastDelivery.push(result.lastDeliveryMs)
        repairs += result.repairs
        repairsByView.push(result.repairs)
        duplicates += result.duplicates
        if (view % 20 === 0 || budget) {
          log(
            `N=${size}: view ${view}, last delivery ${result.lastDeliveryMs} ms, repairs ${result.repairs}, ${elapsed(loadStarted)} ms wall`
          )
        }
      }
      const mean = totals.reduce((a, b) => a + b, 0) / totals.length
      emit({
        bench: "broadcast-sim",
        case: "relay-load",
        nodes: size,
        views,
        mode: budget
          ? `maxConnections ${MAX_CONNECTIONS}: leader<->all pre-warmed, tree edges dialled on demand`
          : "full mesh",
        origin: "validator 0, every view",
        fanout: fanoutFor(size),
        copiesRelayedPerView: Bench.median(perView),
        relaysPerView: Bench.median(relaysPerView),
        maxCopiesOneValidatorOneView: maxPerView,
        perValidatorTotal: {
          min: Math.min(...totals),
          median: Bench.median(totals),
          mean: Bench.round(mean, 1),
          max: Math.max(...totals),
          maxOverMean: Bench.round(Math.max(...totals) / mean, 2),
          gini: Bench.round(gini(totals))
        },
        viewsAsRelay: {
          min: Math.min(...relayViews),
          median: Bench.median(relayViews),
          max: Math.max(...relayViews),
          neverRelayed: relayViews.filter((n) => n === 0).length
        },
        lastDeliveryMs: {
          min: Math.min(...lastDelivery),
          median: Bench.median(lastDelivery),
          max: Math.max(...lastDelivery)
        },
        repairs,
        viewsWithRepairs: repairsByView.filter((n) => n > 0).length,
        repairsFirst10Views: repairsByView.slice(0, 10).reduce((a, b) => a + b, 0),
        repairsLast10Views: repairsByView.slice(-10).reduce((a, b) => a + b, 0),
        duplicates,
        wallMs: elapsed(started),
        peakHeapMiB: MiB(peakHeap),
        loadavg: loadavg()
      })
    })
  )

const maxOldSpace = () => {
  const flag = process.execArgv.find((a) => a.startsWith("--max-old-space-size"))
  return flag === undefined ? undefined : Number(flag.split("=")[1])
}
const loadavg = () => os.loadavg().map((l) => Bench.round(l, 2))

const program = Effect.gen(function* () {
  log(`${JSON.stringify(Bench.machine())} load ${loadavg().join(" ")}`)
  if (only.has("timing")) {
    const largest = Math.max(...sizes)
    for (const size of sizes) yield* timing(size, size === largest)
  }
  if (only.has("load")) for (const size of loadSizes) yield* load(size, loadViews, false)
  if (only.has("load-budget")) for (const size of loadSizes) yield* load(size, loadViews, true)
})

program
  .pipe(
    Effect.provide(TestContext.TestContext),
    Logger.withMinimumLogLevel(LogLevel.Error),
    Effect.runPromise
  )
  .then(
    () => process.exit(0),
    (error) => {
      log(`failed: ${error}`)
      process.exit(1)
    }
  )
