// NodeNetwork benchmark: the whole stack of a validator (broadcast, peers, TLS transport) against raw
// node:tls sockets carrying the same message bytes, measured in the same run, on 127.0.0.1.
//
// - one-way: validator 0 (this process, CPU 0) sends 1 KiB Proposals with `NodeNetwork.send` to
//   validator 1 (a forked process, peer.ts, CPU 1), which consumes `messages` a chunk at a time;
//   timed from the first send to the receipt of the last (both clocks CLOCK_MONOTONIC). Raw: the
//   same slot bytes, one per frame, written to a raw node:tls server in another forked process with
//   the transport bench's coalescing (RawSocket.pump). Rounds alternate raw and node.
// - ping-pong: a Vote sent, a Vote answered; round-trip time at the sender, p50/p99 over blocks that
//   alternate raw and node.
// - broadcast N=4 and N=16: leader and followers in this process (broadcast.ts), beside raw TLS
//   leader -> followers -> Vote back, without and with the signatures.
//
// One JSON line per result on stdout, then a summary line with the ratios and the targets
// (reported, not asserted); progress on stderr.
//
// Env: BENCH_LOAD=1 (the loaded variant: a busy process on the peer's CPU for the whole run),
// BENCH_ROUNDS (default 7), BENCH_QUICK=1 (a tenth of the work), BENCH_PIN=0 (no taskset),
// BENCH_CONSUMER=stream (both validators consume the `messages` stream; default: `receive`),
// BENCH_CASES=comma-separated subset of "oneway,rtt,broadcast", BENCH_VALIDATORS (default "4,16"), BENCH_IMPL=raw|node (one side only,
// to profile it), BENCH_CHILD_NODE_OPTIONS (extra node flags for the forked peers, e.g. --cpu-prof).
// Profiling: `npx tsc -b`, then `node --cpu-prof dist/bench/node.bench.js`.
import type * as net from "node:net"
import * as os from "node:os"
import { Bench, BenchProcess, RawSocket } from "@hotstuff2/testing"
import { Frame, type Message } from "@hotstuff2/wire"
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import { NodeNetwork } from "../src/index.js"
import { reservePorts } from "../src/internal/ports.js"
import { type Side as BroadcastSide, type Harness, nodeHarness, type Round, rawHarness } from "./broadcast.js"
import {
  benchConfig,
  directSlot,
  encodeFrame,
  identity,
  type Mode,
  proposal,
  tlsMaterial,
  vote
} from "./setup.js"

Bench.resultsOnStdout()

const { cpuMicros, gcMillis, machine, median, now, percentile, pin, report, round } = Bench
gcMillis() // starts counting

// ---- parameters ----

const quick = process.env.BENCH_QUICK === "1"
const ROUNDS = Math.max(1, Math.min(15, Number(process.env.BENCH_ROUNDS ?? 7) || 7))
const WINDOW = RawSocket.defaultWindow
const ONE_WAY = { payloadBytes: 1024, count: quick ? 10_000 : 100_000 }
const PING_PONG = { warmup: quick ? 300 : 2_000, blocks: 4, perBlock: quick ? 300 : 3_000 }
const BROADCAST = {
  sizes: (process.env.BENCH_VALIDATORS ?? "4,16,64")
    .split(",")
    .map(Number)
    .filter((n) => n >= 2),
  warmup: quick ? 30 : 200,
  blocks: 5,
  perBlock: quick ? 20 : 200
}
/** Rounds for `n` validators: a fifth of them from 32 on (a round at 64 takes about 100 ms over all sides). */
const broadcastRounds = (n: number) =>
  n >= 32
    ? { warmup: Math.max(10, BROADCAST.warmup / 10), perBlock: Math.max(10, BROADCAST.perBlock / 5) }
    : BROADCAST
const STEP_TIMEOUT_MS = 60_000
const DEADLINE_MS = 8 * 60_000
/** How both validators take messages: `NodeNetwork.receive` in a loop, or the `messages` stream. */
const consumer = process.env.BENCH_CONSUMER === "stream" ? "stream" : "receive"
const selected = new Set((process.env.BENCH_CASES ?? "oneway,rtt,broadcast").split(","))

type Side = "raw" | "node"
const sides: ReadonlyArray<Side> = (["raw", "node"] as const).filter(
  (side) => (process.env.BENCH_IMPL ?? side) === side
)

const { log, pinned, start, burn } = BenchProcess.supervise("node.bench", {
  deadlineMs: DEADLINE_MS,
  stepTimeoutMs: STEP_TIMEOUT_MS
})

// ---- processes ----

/** A forked peer process (bench/peer.ts) and where it listens. */
type Peer = BenchProcess.BenchChild & { readonly address: string }

const startPeer = async (mode: Mode, args: ReadonlyArray<string>): Promise<Peer> => {
  const { child, first } = await start(import.meta.url, "peer", [mode, ...args], "listening")
  return Object.assign(child, { address: first.type === "listening" ? first.address : "" })
}

// ---- our side: validator 0 in this process ----

interface Local {
  readonly network: NodeNetwork.Shape
  /** Takes the next chunk of messages (for ping-pong): how many it held. */
  readonly pull: Effect.Effect<number>
  readonly close: () => Promise<void>
}

const startLocal = async (addresses: ReadonlyArray<string>, remote: NodeNetwork.PeerId): Promise<Local> => {
  const scope = Effect.runSync(Scope.make())
  const built = await Effect.runPromise(
    Effect.gen(function* () {
      const context = yield* Layer.buildWithScope(NodeNetwork.layer(benchConfig(0, addresses)), scope)
      const network = Context.get(context, NodeNetwork)
      const pull =
        consumer === "receive" ? network.receive : yield* Scope.extend(Stream.toPull(network.messages), scope)
      yield* Effect.gen(function* () {
        for (;;) {
          const peers = yield* network.peers
          if (peers.some((p) => p.id === remote && p.state === "connected")) return
          yield* Effect.sleep(Duration.millis(20))
        }
      }).pipe(
        Effect.timeoutFail({
          duration: Duration.millis(STEP_TIMEOUT_MS),
          onTimeout: () => new Error("no connection")
        })
      )
      return { network, pull: Effect.map(Effect.orDie(pull), (chunk) => chunk.length) }
    })
  )
  return { ...built, close: () => Effect.runPromise(Scope.close(scope, Exit.void)) }
}

const yieldTurn = Effect.async<void>((resume) => {
  setImmediate(() => resume(Effect.void))
})

/**
 * Sends `count` messages with `NodeNetwork.send`, as an application would (one Effect per message),
 * up to WINDOW per event-loop turn; on `Backpressure` waits a turn and retries that message.
 * Returns how many retries it took.
 */
const pumpNode = (
  network: NodeNetwork.Shape,
  peer: NodeNetwork.PeerId,
  message: Message.Message,
  count: number
) =>
  Effect.gen(function* () {
    let retries = 0
    for (let sent = 0; sent < count; ) {
      const end = Math.min(sent + WINDOW, count)
      while (sent < end) {
        const result = yield* Effect.either(network.send(peer, message))
        if (Either.isRight(result)) sent++
        else if (result.left._tag === "Backpressure") {
          retries++
          yield* yieldTurn
        } else return yield* Effect.fail(result.left)
      }
      yield* yieldTurn
    }
    return retries
  }).pipe(
    Effect.timeoutFail({
      duration: Duration.millis(STEP_TIMEOUT_MS),
      onTimeout: () => new Error("node send timed out")
    })
  )

/** Round-trip times (ns): a Vote sent with `send`, the answer taken from `messages`. */
const pingPongNode = (local: Local, peer: NodeNetwork.PeerId, message: Message.Message, n: number) =>
  Effect.gen(function* () {
    const samples = new Float64Array(n)
    for (let i = 0; i < n; i++) {
      const sentAt = now()
      yield* local.network.send(peer, message)
      let got = 0
      while (got === 0) got += yield* local.pull
      samples[i] = Number(now() - sentAt)
    }
    return samples
  }).pipe(
    Effect.timeoutFail({
      duration: Duration.millis(STEP_TIMEOUT_MS),
      onTimeout: () => new Error("node ping-pong timed out")
    })
  )

// ---- cases ----

/** The loaded variant: a busy process on CPU 1 (the forked peer's) for the whole run. */
const loaded = process.env.BENCH_LOAD === "1"
const info = { ...machine(), pinned, window: WINDOW, consumer, loaded }
const ratios: Record<string, number> = {}

const { timedRound } = BenchProcess

interface Setup {
  readonly raw: { readonly peer: Peer; readonly socket: net.Socket }
  readonly node: { readonly peer: Peer; readonly local: Local; readonly remote: NodeNetwork.PeerId }
}

const implName = (side: Side) => (side === "raw" ? "raw node:tls" : "NodeNetwork (tls)")

const runOneWay = async (setup: Setup) => {
  const message = proposal(1n, identity(0).peerId, ONE_WAY.payloadBytes)
  const slot = directSlot(message)
  const frameBytes = encodeFrame(slot).length
  const roundOf = (side: Side) =>
    side === "raw"
      ? timedRound(setup.raw.peer, ONE_WAY.count, () =>
          RawSocket.pump(setup.raw.socket, () => encodeFrame(slot), ONE_WAY.count, {
            window: WINDOW,
            timeoutMs: STEP_TIMEOUT_MS
          })
        )
      : timedRound(setup.node.peer, ONE_WAY.count, () =>
          Effect.runPromise(pumpNode(setup.node.local.network, setup.node.remote, message, ONE_WAY.count))
        )
  log("one-way 1KiB Proposal: warm-up")
  for (const side of sides) await roundOf(side)
  const rounds: Record<Side, Array<Awaited<ReturnType<typeof roundOf>>>> = { raw: [], node: [] }
  for (let r = 0; r < ROUNDS; r++) {
    for (const side of sides) rounds[side].push(await roundOf(side))
    log(`one-way round ${r + 1}: ${sides.map((s) => `${s} ${Math.round(rounds[s][r]!.rate)}`).join(", ")}`)
  }
  const rawRates = rounds.raw.map((x) => x.rate)
  for (const side of sides) {
    const results = rounds[side]
    const rates = results.map((x) => x.rate)
    const rate = median(rates)
    const ratio = side === "node" && rawRates.length > 0 ? round(rate / median(rawRates)) : undefined
    if (ratio !== undefined) ratios["one-way 1KiB"] = ratio
    report({
      bench: "node",
      case: "one-way 1KiB Proposal",
      impl: implName(side),
      messages: ONE_WAY.count,
      frameBytes,
      opsPerSec: Math.round(rate),
      rounds: rates.map(Math.round),
      mbitPerSec: round((rate * frameBytes * 8) / 1e6, 0),
      ...(ratio !== undefined
        ? { ratioToRaw: ratio, roundRatios: rates.map((x, i) => round(x / rawRates[i]!)) }
        : {}),
      ...(side === "node" ? { backpressureRetries: results.map((x) => x.result) } : {}),
      messagesPerReceive: round(median(results.map((x) => x.perReceive)), 1),
      senderCpu: round(median(results.map((x) => x.senderCpu)), 2),
      receiverCpu: round(median(results.map((x) => x.receiverCpu)), 2),
      senderCpuUsPerMessage: round(median(results.map((x) => x.senderCpuUsPerMessage)), 2),
      receiverCpuUsPerMessage: round(median(results.map((x) => x.receiverCpuUsPerMessage)), 2),
      senderGc: round(median(results.map((x) => x.senderGc)), 2),
      receiverGc: round(median(results.map((x) => x.receiverGc)), 2),
      ...info
    })
  }
}

const latency = (samples: ReadonlyArray<Float64Array>) => {
  const { count, meanNanos: _, ...percentiles } = Bench.latency(samples)
  return {
    samples: count,
    blockP50Us: samples.map((s) => round(percentile(Float64Array.from(s).sort(), 50) / 1e3, 1)),
    ...percentiles
  }
}

const runPingPong = async (setup: Setup) => {
  const ping = vote(1n, identity(0).peerId)
  const pingSlot = directSlot(ping)
  const block = (side: Side, n: number) =>
    side === "raw"
      ? RawSocket.pingPong(
          setup.raw.socket,
          () => encodeFrame(pingSlot),
          new Frame.FrameDecoder(),
          n,
          STEP_TIMEOUT_MS
        )
      : Effect.runPromise(pingPongNode(setup.node.local, setup.node.remote, ping, n))
  for (const side of sides) await setup[side].peer.command({ type: "echo" })
  log("ping-pong Vote/Vote: warm-up")
  for (const side of sides) await block(side, PING_PONG.warmup)
  const blocks: Record<Side, Array<Float64Array>> = { raw: [], node: [] }
  // CPU time of both processes per round trip (the peer's from its `ready` reports).
  const cpu: Record<Side, { local: number; remote: number }> = {
    raw: { local: 0, remote: 0 },
    node: { local: 0, remote: 0 }
  }
  for (let b = 0; b < PING_PONG.blocks; b++) {
    for (const side of sides) {
      const before = await setup[side].peer.command({ type: "echo" })
      const localBefore = cpuMicros()
      blocks[side].push(await block(side, PING_PONG.perBlock))
      cpu[side].local += cpuMicros() - localBefore
      const after = await setup[side].peer.command({ type: "echo" })
      if (before.type === "ready" && after.type === "ready")
        cpu[side].remote += after.cpuMicros - before.cpuMicros
    }
  }
  const raw = blocks.raw.length > 0 ? latency(blocks.raw) : undefined
  for (const side of sides) {
    const result = latency(blocks[side])
    let ratio = {}
    if (side === "node" && raw !== undefined) {
      ratios["rtt p50"] = round(result.p50Us / raw.p50Us)
      ratios["rtt p99"] = round(result.p99Us / raw.p99Us)
      ratio = { ratioToRaw: ratios["rtt p50"], p99RatioToRaw: ratios["rtt p99"] }
    }
    report({
      bench: "node",
      case: "ping-pong Vote",
      impl: implName(side),
      frameBytes: encodeFrame(pingSlot).length,
      warmup: PING_PONG.warmup,
      ...result,
      cpuUsPerRoundTrip: {
        sender: round(cpu[side].local / result.samples, 1),
        echo: round(cpu[side].remote / result.samples, 1)
      },
      ...ratio,
      ...info
    })
  }
}

const broadcastSides: ReadonlyArray<BroadcastSide> = ["raw", "raw+sig", "node"]

const runBroadcast = async (n: number) => {
  log(`broadcast N=${n}: starting ${n} validators and the raw sockets`)
  const harnesses = new Map<BroadcastSide, Harness>()
  try {
    harnesses.set("raw", await rawHarness(n, false, STEP_TIMEOUT_MS))
    harnesses.set("raw+sig", await rawHarness(n, true, STEP_TIMEOUT_MS))
    const startedAt = now()
    harnesses.set("node", await nodeHarness(n, STEP_TIMEOUT_MS))
    log(`broadcast N=${n}: validators connected in ${round(Number(now() - startedAt) / 1e6, 0)} ms`)
    const rounds = async (side: BroadcastSide, count: number) => {
      const harness = harnesses.get(side)!
      const out: Array<Round> = []
      for (let i = 0; i < count; i++) out.push(await harness.round())
      return out
    }
    const counts = broadcastRounds(n)
    for (const side of broadcastSides) await rounds(side, counts.warmup)
    const results: Record<BroadcastSide, Array<Array<Round>>> = { raw: [], "raw+sig": [], node: [] }
    for (let b = 0; b < BROADCAST.blocks; b++) {
      for (const side of broadcastSides) results[side].push(await rounds(side, counts.perBlock))
    }
    const summary = (side: BroadcastSide) => {
      const blocks = results[side]
      const all = blocks.flat()
      const us = (xs: ReadonlyArray<number>) => Float64Array.from(xs).sort()
      const acked = us(all.map((r) => r.acked))
      const delivered = us(all.map((r) => r.delivered))
      return {
        rounds: all.length,
        deliveredP50Us: round(percentile(delivered, 50) / 1e3, 1),
        deliveredP99Us: round(percentile(delivered, 99) / 1e3, 1),
        ackedP50Us: round(percentile(acked, 50) / 1e3, 1),
        ackedP99Us: round(percentile(acked, 99) / 1e3, 1),
        blockAckedP50Us: blocks.map((block) => round(percentile(us(block.map((r) => r.acked)), 50) / 1e3, 1))
      }
    }
    const raw = summary("raw")
    const signed = summary("raw+sig")
    for (const side of broadcastSides) {
      const result = summary(side)
      const ratio =
        side === "node"
          ? {
              ratioToRaw: round(result.ackedP50Us / raw.ackedP50Us),
              ratioToRawWithSignatures: round(result.ackedP50Us / signed.ackedP50Us),
              deliveredRatioToRaw: round(result.deliveredP50Us / raw.deliveredP50Us)
            }
          : {}
      if (side === "node") {
        ratios[`broadcast N=${n} acked p50`] = ratio.ratioToRaw!
        ratios[`broadcast N=${n} acked p50 vs raw+sig`] = ratio.ratioToRawWithSignatures!
      }
      report({
        bench: "node",
        case: `broadcast N=${n} 1KiB Proposal`,
        impl:
          side === "node"
            ? "NodeNetwork (tls)"
            : side === "raw"
              ? "raw node:tls"
              : "raw node:tls + seal/open",
        validators: n,
        oneProcess: true,
        ...result,
        ...ratio,
        ...info
      })
    }
  } finally {
    for (const harness of harnesses.values()) await harness.close()
  }
}

const main = async () => {
  const started = now()
  if (loaded) {
    log(`loaded: a busy process (pid ${burn(1)}) on CPU ${pinned ? 1 : "any"} for the whole run`)
  }
  if (selected.has("oneway") || selected.has("rtt")) {
    const addresses = (await Effect.runPromise(reservePorts(2))).map((port) => `127.0.0.1:${port}`)
    log("starting the peers")
    const [rawPeer, nodePeer] = await Promise.all([startPeer("raw", []), startPeer("node", addresses)])
    let socket: net.Socket | undefined
    let local: Local | undefined
    try {
      const remote = identity(1).peerId
      socket = await RawSocket.connect("tls", rawPeer.address, tlsMaterial(identity(0)), STEP_TIMEOUT_MS)
      local = await startLocal(addresses, remote)
      const setup: Setup = { raw: { peer: rawPeer, socket }, node: { peer: nodePeer, local, remote } }
      if (selected.has("oneway")) await runOneWay(setup)
      if (selected.has("rtt")) await runPingPong(setup)
    } finally {
      socket?.destroy()
      await local?.close()
      await Promise.all([rawPeer.stop(), nodePeer.stop()])
    }
  }
  if (selected.has("broadcast")) {
    // One process for the whole validator set: let it use both CPUs.
    if (pinned) pin(process.pid, `0-${os.cpus().length - 1}`)
    for (const n of BROADCAST.sizes) await runBroadcast(n)
  }
  const target = (name: string, key: string, met: (r: number) => boolean) => ({
    target: name,
    ratio: ratios[key] ?? null,
    met: ratios[key] === undefined ? null : met(ratios[key]!)
  })
  report({
    bench: "node",
    case: "summary",
    ratiosToRaw: ratios,
    // Issue 17's targets, ratios to raw in this run.
    targets: [
      loaded
        ? target("one-way 1KiB >= 0.6x raw (loaded)", "one-way 1KiB", (r) => r >= 0.6)
        : target("one-way 1KiB >= 0.7x raw", "one-way 1KiB", (r) => r >= 0.7),
      target("RTT p50 <= 1.15x raw", "rtt p50", (r) => r <= 1.15),
      target("RTT p99 <= 1.5x raw", "rtt p99", (r) => r <= 1.5),
      ...BROADCAST.sizes.map((n) =>
        target(
          `broadcast N=${n} all acked p50 <= 1.5x raw + seal/open`,
          `broadcast N=${n} acked p50 vs raw+sig`,
          (r) => r <= 1.5
        )
      )
    ],
    seconds: round(Number(now() - started) / 1e9, 1),
    ...info
  })
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
