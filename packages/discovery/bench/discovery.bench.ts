// Discovery benchmark (issue 12): how long validators that know the set by key only, and two
// bootstrap nodes, take to learn every validator's address, and what gossip costs in bytes.
//
// Part 1, the real stack (realCluster.ts), 30 then 100 nodes: registry, peer manager, memory
// transport and discovery, on the seeded simulated network under TestClock, as test/scale.test.ts
// sets them up (gossipInterval 10 s, heartbeats 5 s, 20 ms links, seed 100, recordHostNames on). Stepped 1 s at a time:
// simulated seconds until every node knows every validator's address and until the full mesh, then a
// steady minute. Discovery bytes are the encoded messages discovery hands the peer manager for the
// discovery channel (framing, heartbeats, handshakes not counted; the simulated network's total
// over all channels is reported beside them). Wall time and peak heap (heapUsed, sampled every step)
// are this process's. 1,000 real nodes (999,000 connection ends) do not fit one process today.
//
// Part 2, the protocol (protocolSim.ts), 100 and 1,000 nodes. Real: `Gossip` and `Book` from
// src/internal, real Ed25519-signed `PeerRecord`s (checked and verified by the receiver), the real
// codec (every byte counted is one it produced), the default config (64 records per reply, 4
// requests per peer per interval) but for recordHostNames (on: records carry part 1's host names).
// Modelled, as the core (src/internal/discovery.ts) does:
// - every node knows the validator set by key; nodes 1 and 2 (validators) are the entry points, and
//   every other node starts connected to both (round 0, in a seeded order);
// - a new connection runs `onConnected` at both ends: own record pushed, a request while some
//   validator's address is missing;
// - each round (one gossipInterval) a node first connects to up to `maxConcurrentDials` (8)
//   validators it has learned and is not connected to (in the order learned), then sends one
//   request to a connected peer drawn at random; every message of the round is delivered, in order,
//   before the next round (replies to replies included);
// - a seeded PRNG (mulberry32, BENCH_SEED) for every draw: the same seed gives the same rounds and bytes.
// Not modelled: no transport (no latency, loss, framing, handshakes or queues: every message
// arrives); connection formation is up to 8 per node per round, where the real dialer dials at once
// when an address is learned (8 at a time, each in a few round trips), so the real stack learns in
// fewer intervals; no heartbeats, no bans, no disconnects, no address changes, no epochs.
// Time is rounds x gossipInterval: at the production default (30 s), at 10 s (part 1's) and at the
// devnet figure of 5 s (the test fixture's; the devnet CLI sets no interval). Bytes per node per
// second are for the learning rounds (round 0 to the one where the last node learned) and for
// `BENCH_STEADY_ROUNDS` (default 2) rounds after it.
//
// One JSON line per result on stdout (see @hotstuff2/testing Bench); progress on stderr. Env:
// BENCH_ONLY (real, sim), BENCH_REAL_SIZES (default 30,100), BENCH_SIM_SIZES (default 100,1000),
// BENCH_SEED (default 12), BENCH_STEADY_ROUNDS, BENCH_SIM_MAX_ROUNDS (default 200; -1 rounds: not
// learned within them).
import * as v8 from "node:v8"
import * as vm from "node:vm"
import { Bench } from "@hotstuff2/testing"
import * as Effect from "effect/Effect"
import * as Logger from "effect/Logger"
import * as LogLevel from "effect/LogLevel"
import * as TestContext from "effect/TestContext"
import { simulate } from "./protocolSim.js"
import { type ClusterResult, type Mark, runCluster } from "./realCluster.js"

Bench.resultsOnStdout()

const { machine, median, report, round } = Bench

v8.setFlagsFromString("--expose-gc")
const gc = vm.runInNewContext("gc") as () => void

const log = (line: string) => process.stderr.write(`[discovery bench] ${line}\n`)
const envList = (name: string, fallback: string) =>
  (process.env[name] ?? fallback)
    .split(",")
    .map((s) => s.trim())
    .filter((s) => s.length > 0)
const only = envList("BENCH_ONLY", "real,sim")
const seed = Number(process.env.BENCH_SEED ?? 12)
const steadyRounds = Number(process.env.BENCH_STEADY_ROUNDS ?? 2)
const maxRounds = Number(process.env.BENCH_SIM_MAX_ROUNDS ?? 200)

const perNodeSecond = (bytes: number, nodes: number, seconds: number) =>
  seconds > 0 ? round(bytes / nodes / seconds, 1) : null
const maxOf = (xs: ReadonlyArray<number>) => xs.reduce((m, x) => Math.max(m, x), 0)
const repliesSummary = (xs: ReadonlyArray<number>) =>
  xs.length === 0 ? { replies: 0 } : { replies: xs.length, maxRecords: maxOf(xs), medianRecords: median(xs) }

const realCase = (r: ClusterResult) => {
  const window = (from: Mark, to: Mark) => ({
    seconds: to.seconds - from.seconds,
    bytes: to.bytes - from.bytes,
    messages: to.messages - from.messages,
    bytesPerNodePerSecond: perNodeSecond(to.bytes - from.bytes, r.nodes, to.seconds - from.seconds),
    ...repliesSummary(r.replies.slice(from.replies, to.replies))
  })
  const settled = r.learned.seconds >= r.meshed.seconds ? r.learned : r.meshed
  return {
    bench: "discovery",
    case: `real-${r.nodes}`,
    nodes: r.nodes,
    gossipIntervalS: 10,
    learnedAtS: r.learnedAt,
    meshAtS: r.meshAt,
    learning: window(r.start, r.learned),
    untilMesh: window(r.learned, r.meshed),
    steady: window(settled, r.steadyEnd),
    networkBytesPerNodePerSecondAllChannels: perNodeSecond(r.networkBytes, r.nodes, r.steadyEnd.seconds),
    wallS: round(r.wallSeconds, 1),
    startWallS: round(r.startWallSeconds, 1),
    peakHeapMB: Math.round(r.peakHeapBytes / 2 ** 20)
  }
}

const main = async () => {
  report({ bench: "discovery", case: "machine", ...machine() })

  if (only.includes("real")) {
    for (const size of envList("BENCH_REAL_SIZES", "30,100").map(Number)) {
      gc()
      log(`real stack, ${size} nodes`)
      const result = await Effect.runPromise(
        runCluster({ size, stepSeconds: 1, capSeconds: 300, steadySeconds: 60 }).pipe(
          Effect.scoped,
          Effect.provide(TestContext.TestContext),
          Logger.withMinimumLogLevel(LogLevel.Error)
        )
      )
      report(realCase(result))
    }
  }

  if (only.includes("sim")) {
    for (const size of envList("BENCH_SIM_SIZES", "100,1000").map(Number)) {
      gc()
      log(`protocol simulation, ${size} nodes`)
      const r = simulate({
        nodes: size,
        seed,
        dialsPerRound: 8,
        steadyRounds,
        maxRounds,
        onRound: (n, learned, fewest, mean) =>
          log(
            `  round ${n}: ${learned}/${size} nodes know every address; fewest known ${fewest}, mean ${round(mean, 1)}`
          )
      })
      // Round 0 happens at t = 0, so learning spans `roundsToLearn` intervals (every round run, when
      // not everyone learned within `maxRounds`).
      const learned = r.roundsToLearn >= 0
      const learnIntervals = Math.max(1, learned ? r.roundsToLearn : r.progress.length - 1)
      const at = (intervalS: number) => ({
        intervalS,
        learnS: learned ? r.roundsToLearn * intervalS : null,
        learnBytesPerNodePerSecond: perNodeSecond(r.learnBytes, size, learnIntervals * intervalS),
        steadyBytesPerNodePerSecond: perNodeSecond(r.steadyBytes, size, steadyRounds * intervalS)
      })
      report({
        bench: "discovery",
        case: `sim-${size}`,
        nodes: size,
        seed,
        roundsToLearn: r.roundsToLearn,
        roundsRun: r.progress.length - 1,
        production: at(30),
        partOne: at(10),
        devnet: at(5),
        learnBytesPerNodePerRound: round(r.learnBytes / size / learnIntervals, 1),
        steadyBytesPerNodePerRound: round(r.steadyBytes / size / Math.max(1, steadyRounds), 1),
        learnMessages: r.learnMessages,
        steadyMessages: r.steadyMessages,
        learnReplies: repliesSummary(r.learnReplies),
        steadyReplies: repliesSummary(r.steadyReplies),
        nodesWithEveryAddressByRound: r.progress,
        meanAddressesKnownByRound: r.meanKnown,
        connectionsPerNodeAtLearn: round(r.connectionsAtLearn, 1),
        recordsAccepted: r.recordsAccepted,
        reports: r.reports,
        wallS: round(r.wallSeconds, 1)
      })
    }
  }
}

main().catch((error) => {
  process.stderr.write(`${String(error)}\n`)
  process.exitCode = 1
})
