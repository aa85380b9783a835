// Reliable against unreliable broadcast over real TLS (issue 14), beside raw node:tls in the same run.
// For each N (default 4 and 16), a leader (validator 0) and N-1 followers in this process on
// 127.0.0.1 (one JS thread, one clock, both CPUs), 1 KiB AppMessages (the control channel):
//
// - throughput: the leader broadcasts RELIABLE_MESSAGES (default 3,000 at N = 4, 600 at N = 16)
//   back to back, at most RawSocket.defaultWindow per event-loop turn, and the round ends when every
//   follower has every message: messages/s = count / (first send to last delivery). A receipt's
//   `failed` peers (Backpressure, or for reliable a full reliable buffer) get the message again by
//   `multicast` after a turn, counted as retries. Reliable: also the time until the last message is
//   acknowledged by all N-1 (`awaitAcks`), so that no round leaves acks owed to the next, and the
//   nodes' reliable counters over the round (Effect metrics: retransmissions, duplicates dropped).
// - latency: one broadcast every RELIABLE_INTERVAL_MS (20; a round starts no earlier than the last
//   one's deliveries, and for reliable its acknowledgements): per follower, broadcast -> delivered
//   (p50/p99 over every follower's delivery, and of the last follower's); reliable also broadcast ->
//   `awaitAcks(N-1)` resolved. The "one RTT" of the goal is the raw TLS round trip in this process
//   (leader -> follower 1, the 1 KiB frame out, a Vote frame back), paced the same way in the same
//   rotation (the same wake-ups from idle on a shared machine); back to back for reference.
//
// Sides: `raw` (the same envelope frame written to N-1 node:tls sockets, decoded by each), `raw+sig`
// (an envelope sealed per message and opened, Ed25519 verified, by each follower: the signature work
// NodeNetwork does too), `unreliable` (`broadcast(m, { reliable: false })`) and `reliable`
// (`broadcast(m, { reliable: true })`), both on the same validators; and, throughput only,
// `reliable-rto10s`: reliable on a second set of validators whose retransmission timer waits 10 s, so
// that nothing is sent twice (reliable's own cost per message, without retransmissions). Sides take
// turns a round (throughput) or a block (latency) at a time, the order rotating.
// Goals (issue 14, reported, not asserted): reliable throughput >= 0.85 x unreliable; reliable p50
// delivery <= unreliable p50 + one raw RTT p50.
//
// Config: the bench config of node.bench (consensus rate limits lifted) with the control channel's
// inbound limit (5,000 messages/s by default) lifted too, a 30 s handshake timeout and 15 missed
// heartbeats (all validators share one busy thread); broadcast config default (ackDelay 10 ms,
// ackEvery 64, retransmitAfterMin 100 ms).
//
// Run from packages/node: `npm run bench:reliable` (tsc -b, then node dist/bench/reliable.js); about
// a minute per N on a loaded 2 vCPU machine. JSON lines on stdout, progress on stderr. Env:
// RELIABLE_VALIDATORS ("4,16"), RELIABLE_MESSAGES (per round, all N), RELIABLE_ROUNDS (5 timed
// throughput rounds a side, after one warm-up), RELIABLE_LATENCY_BLOCKS (5) x
// RELIABLE_LATENCY_PER_BLOCK (40), RELIABLE_INTERVAL_MS (20), RELIABLE_SIDES (a subset of
// raw,raw+sig,unreliable,reliable,reliable-rto10s; the ratios need their baselines). Profiling:
// `node --cpu-prof dist/bench/reliable.js` with RELIABLE_SIDES=reliable.
import type * as net from "node:net"
import * as os from "node:os"
import * as tls from "node:tls"
import type { BroadcastConfig } from "@hotstuff2/broadcast"
import { PeersConfig } from "@hotstuff2/peers"
import { Bench, BenchProcess, RawSocket } from "@hotstuff2/testing"
import { TransportConfig } from "@hotstuff2/transport"
import { Codec, Envelope, Frame, Identity, Message } from "@hotstuff2/wire"
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as Metric from "effect/Metric"
import * as MetricState from "effect/MetricState"
import * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import { type NodeConfig, NodeNetwork } from "../src/index.js"
import { reservePorts } from "../src/internal/ports.js"
import { NETWORK, peerId, seedOf } from "../test/fixtures/cluster.js"
import { benchConfig, directSlot, envelopeSlot, identity, tlsMaterial, vote } from "./setup.js"

Bench.resultsOnStdout()

const { cpuMicros, gcMillis, machine, median, now, percentile, pin, report, round } = Bench
gcMillis() // starts counting

// ---- parameters ----

const numberOf = (name: string, fallback: number): number => {
  const n = Number(process.env[name])
  return Number.isFinite(n) && n > 0 ? n : fallback
}
const SIZES = (process.env.RELIABLE_VALIDATORS ?? "4,16")
  .split(",")
  .map(Number)
  .filter((n) => Number.isInteger(n) && n >= 2)
const messagesFor = (n: number) => numberOf("RELIABLE_MESSAGES", n <= 4 ? 3000 : 600)
const ROUNDS = numberOf("RELIABLE_ROUNDS", 5)
const LATENCY_BLOCKS = numberOf("RELIABLE_LATENCY_BLOCKS", 5)
const LATENCY_PER_BLOCK = numberOf("RELIABLE_LATENCY_PER_BLOCK", 40)
const INTERVAL_MS = numberOf("RELIABLE_INTERVAL_MS", 20)
const PAYLOAD_BYTES = 1024
const WINDOW = RawSocket.defaultWindow
const STEP_TIMEOUT_MS = 60_000
const DEADLINE_MS = 10 * 60_000
const MiB = 1024 * 1024
const CONTROL = TransportConfig.Channel.control

type SideName = "raw" | "raw+sig" | "unreliable" | "reliable" | "reliable-rto10s"
const ALL_SIDES: ReadonlyArray<SideName> = ["raw", "raw+sig", "unreliable", "reliable", "reliable-rto10s"]
/**
 * Diagnostic side, throughput only: reliable on validators whose retransmission timer waits 10 s
 * (`retransmitAfterMin` and `retransmitAfterMax`), so that no round retransmits: reliable's cost per
 * message without the retransmissions a backlog triggers.
 */
const NO_TIMER = { retransmitAfterMin: 10_000, retransmitAfterMax: 10_000 }
const wanted = process.env.RELIABLE_SIDES?.split(",")
const SIDES = ALL_SIDES.filter((s) => wanted === undefined || wanted.includes(s))

const { log, pinned } = BenchProcess.supervise("reliable", {
  deadlineMs: DEADLINE_MS,
  stepTimeoutMs: STEP_TIMEOUT_MS
})
// One process holds the whole validator set: let it use every CPU (as node.bench's broadcast case).
if (pinned) pin(process.pid, `0-${os.cpus().length - 1}`)

const loadAverage = () => os.loadavg().map((x) => round(x, 2))
const nextTurn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve))
const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms))
const yieldTurn = Effect.async<void>((resume) => {
  setImmediate(() => resume(Effect.void))
})

/**
 * The node's reliable counters summed over every validator in this process (Effect's metric registry
 * is per process; each node labels its own): retransmissions, and arrivals dropped per reason.
 */
const reliableCounters = (nodes: ReadonlySet<string>) => {
  const out = { retransmitted: 0, duplicates: 0, dropped: 0, acked: 0 }
  for (const pair of Effect.runSync(Metric.snapshot)) {
    const state = pair.metricState
    if (!MetricState.isCounterState(state)) continue
    if (!pair.metricKey.tags.some((t) => t.key === "node" && nodes.has(t.value))) continue
    const count = Number(state.count)
    switch (pair.metricKey.name) {
      case "hotstuff2_reliable_retransmissions":
        out.retransmitted += count
        break
      case "hotstuff2_reliable_acked":
        out.acked += count
        break
      case "hotstuff2_reliable_dropped":
        out.dropped += count
        if (pair.metricKey.tags.some((t) => t.key === "why" && t.value === "duplicate"))
          out.duplicates += count
        break
    }
  }
  return out
}
const countersSince = (nodes: ReadonlySet<string>, before: ReturnType<typeof reliableCounters>) => {
  const after = reliableCounters(nodes)
  return {
    retransmitted: after.retransmitted - before.retransmitted,
    duplicates: after.duplicates - before.duplicates,
    dropped: after.dropped - before.dropped,
    acked: after.acked - before.acked
  }
}

// ---- messages ----

const payload = new Uint8Array(PAYLOAD_BYTES).fill(7)
const appMessage: Message.Message = Message.AppMessage.make({ topic: "bench", data: payload })
const encodedApp = Either.getOrThrow(Codec.encode(appMessage))

/** A frame on the control channel carrying one slot, as the node sends an AppMessage. */
const controlFrame = (slot: Uint8Array): Uint8Array =>
  Either.getOrThrow(Frame.encode({ channel: CONTROL, messages: [slot] }))

// ---- arrivals: what the followers got ----

/** Counts deliveries at the followers; resolves a waiter once `target` have come. */
class Arrivals {
  private count = 0
  private target = 0
  private resolve: (() => void) | undefined
  private timer: ReturnType<typeof setTimeout> | undefined
  /** Delivery times of the current latency round, one per follower delivery. */
  times: Array<bigint> = []
  lastAt = 0n

  expect(target: number, what: string): Promise<void> {
    clearTimeout(this.timer)
    this.count = 0
    this.target = target
    this.times = []
    return new Promise<void>((resolve, reject) => {
      this.timer = setTimeout(() => {
        this.resolve = undefined
        reject(new Error(`${what}: ${this.count} of ${target} deliveries within ${STEP_TIMEOUT_MS} ms`))
      }, STEP_TIMEOUT_MS)
      this.resolve = () => {
        clearTimeout(this.timer)
        resolve()
      }
      if (target === 0) this.finish()
    })
  }

  add(n: number, at: bigint, timed: boolean): void {
    this.count += n
    this.lastAt = at
    if (timed) for (let i = 0; i < n; i++) this.times.push(at)
    if (this.count >= this.target) this.finish()
  }

  private finish(): void {
    const resolve = this.resolve
    this.resolve = undefined
    resolve?.()
  }
}

// ---- sides ----

interface ThroughputRound {
  /** Nanoseconds from the first send to the last delivery at the last follower. */
  readonly deliveredNs: number
  /** Reliable: to the acknowledgement of the last message by all N-1. */
  readonly ackedNs: number | undefined
  readonly retries: number
  readonly cpuMicros: number
  /** Reliable: the nodes' reliable counters over the round. */
  readonly counters?: ReturnType<typeof countersSince>
}

interface LatencyRound {
  /** Nanoseconds from the broadcast to each follower's delivery. */
  readonly delivered: ReadonlyArray<number>
  readonly acked: number | undefined
}

interface Side {
  readonly name: SideName
  readonly throughput: (count: number) => Promise<ThroughputRound>
  readonly one: () => Promise<LatencyRound>
  readonly close: () => Promise<void>
}

interface RawSet {
  readonly raw: Side
  readonly signed: Side
  /** Round-trip times (ns) leader -> follower 1 -> leader: the 1 KiB frame out, a Vote frame back. */
  readonly rtt: (n: number) => Promise<Float64Array>
  readonly close: () => Promise<void>
}

/**
 * N-1 raw node:tls servers (the followers, the validators' certificates) and the leader's sockets to
 * them, shared by `raw` and `raw+sig`. Follower 1 answers each frame with a Vote while `echo` is on.
 */
const startRaw = async (n: number): Promise<RawSet> => {
  const leader = identity(0)
  let sequence = 1n
  const sealedSlot = () =>
    envelopeSlot(
      Either.getOrThrow(
        Envelope.seal(leader, { networkId: NETWORK, sequence: sequence++, payload: encodedApp })
      ).bytes
    )
  const fixedFrame = controlFrame(sealedSlot())
  const arrivals = new Arrivals()
  let signed = false
  let timed = false
  let echo = false
  const failures: Array<string> = []
  const servers: Array<tls.Server> = []
  const accepted: Array<net.Socket> = []
  for (let i = 1; i < n; i++) {
    const answer = controlFrame(directSlot(vote(1n, identity(i).peerId)))
    const server = tls.createServer(
      { ...tlsMaterial(identity(i)), requestCert: true, rejectUnauthorized: false },
      (socket) => {
        socket.setNoDelay(true)
        socket.on("error", () => {})
        accepted.push(socket)
        const decoder = new Frame.FrameDecoder()
        let frames = 0
        const onFrame = (frame: Frame.Frame) => {
          if (echo) {
            socket.write(answer)
            return
          }
          if (signed) {
            const opened = Envelope.open(frame.messages[0]!.subarray(1), NETWORK)
            if (Either.isLeft(opened)) failures.push(opened.left.message)
          }
          frames++
        }
        socket.on("data", (chunk: Buffer) => {
          frames = 0
          const error = decoder.push(chunk, onFrame)
          if (error !== undefined) failures.push(error._tag)
          if (frames > 0) arrivals.add(frames, now(), timed)
        })
      }
    )
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject)
      server.listen({ host: "127.0.0.1", port: 0 }, () => resolve())
    })
    servers.push(server)
  }
  const links = await Promise.all(
    servers.map((server) => {
      const address = server.address() as net.AddressInfo
      return RawSocket.connect("tls", `127.0.0.1:${address.port}`, tlsMaterial(leader), STEP_TIMEOUT_MS)
    })
  )
  const check = () => {
    if (failures.length > 0) throw new Error(`raw: ${failures[0]}`)
  }

  const sideOf = (name: "raw" | "raw+sig"): Side => ({
    name,
    throughput: async (count) => {
      signed = name === "raw+sig"
      timed = false
      const done = arrivals.expect(count * (n - 1), `${name} throughput`)
      const cpu = cpuMicros()
      const started = now()
      for (let sent = 0; sent < count; ) {
        const end = Math.min(sent + WINDOW, count)
        for (const socket of links) socket.cork()
        let blocked: Array<net.Socket> = []
        for (; sent < end; sent++) {
          const frame = signed ? controlFrame(sealedSlot()) : fixedFrame
          for (const socket of links) if (!socket.write(frame)) blocked.push(socket)
        }
        for (const socket of links) socket.uncork()
        blocked = [...new Set(blocked)]
        if (blocked.length === 0) await nextTurn()
        else await Promise.all(blocked.map((socket) => RawSocket.drained(socket, STEP_TIMEOUT_MS)))
      }
      await done
      check()
      return {
        deliveredNs: Number(arrivals.lastAt - started),
        ackedNs: undefined,
        retries: 0,
        cpuMicros: cpuMicros() - cpu
      }
    },
    one: async () => {
      signed = name === "raw+sig"
      timed = true
      const done = arrivals.expect(n - 1, `${name} latency`)
      const started = now()
      const frame = signed ? controlFrame(sealedSlot()) : fixedFrame
      for (const socket of links) socket.write(frame)
      await done
      check()
      return { delivered: arrivals.times.map((at) => Number(at - started)), acked: undefined }
    },
    close: async () => {}
  })

  const rtt = async (count: number) => {
    echo = true
    try {
      return await RawSocket.pingPong(
        links[0]!,
        () => fixedFrame,
        new Frame.FrameDecoder(),
        count,
        STEP_TIMEOUT_MS
      )
    } finally {
      echo = false
    }
  }

  return {
    raw: sideOf("raw"),
    signed: sideOf("raw+sig"),
    rtt,
    close: async () => {
      for (const socket of [...links, ...accepted]) socket.destroy()
      await Promise.all(
        servers.map((server) => new Promise<void>((resolve) => server.close(() => resolve())))
      )
    }
  }
}

/** Validator `i`'s config: node.bench's, with the control channel's inbound limit lifted too. */
const configOf = (
  i: number,
  addresses: ReadonlyArray<string>,
  broadcast: BroadcastConfig.BroadcastConfigInput | undefined,
  keys: number
): NodeConfig.NodeConfigInput => {
  const base = benchConfig(i, addresses)
  return {
    ...base,
    // A set of its own keys (fixture keys from `keys` on), so that each set's metrics are its own.
    identity: { seed: seedOf(keys + i) },
    validators: addresses.map((address, j) => ({ id: peerId(keys + j), addresses: [address] })),
    ...(broadcast === undefined ? {} : { broadcast }),
    limits: { ...base.limits, handshakeTimeout: 30_000 },
    peers: {
      heartbeatInterval: 1000,
      missedHeartbeats: 15,
      rateLimits: PeersConfig.defaultRateLimits.map((limit) =>
        limit.channel === TransportConfig.Channel.consensus || limit.channel === CONTROL
          ? { ...limit, messagesPerSecond: 1e9, bytesPerSecond: 1e6 * MiB }
          : limit
      )
    }
  }
}

interface NodeSet {
  readonly unreliable: Side
  readonly reliable: Side
  /** Deliveries that carried `reliable: { incarnation, sequence }`, and those that did not. */
  readonly tagged: () => { readonly reliable: number; readonly unreliable: number }
  readonly close: () => Promise<void>
}

/** N NodeNetwork validators over TLS; resolves once the leader and every follower are connected. */
const startNodes = async (
  n: number,
  broadcast?: BroadcastConfig.BroadcastConfigInput,
  reliableName: "reliable" | "reliable-rto10s" = "reliable",
  keys = 0
): Promise<NodeSet> => {
  const labels = new Set(Array.from({ length: n }, (_, i) => Identity.shortPeerId(peerId(keys + i))))
  const scope = Effect.runSync(Scope.make())
  const arrivals = new Arrivals()
  let timed = false
  const tagged = { reliable: 0, unreliable: 0 }
  const connected = (network: NodeNetwork.Shape) =>
    Effect.map(network.peers, (peers) => peers.filter((p) => p.state === "connected").map((p) => p.id))
  try {
    const leader = await Effect.runPromise(
      Effect.gen(function* () {
        const addresses = (yield* reservePorts(n)).map((port) => `127.0.0.1:${port}`)
        const networks = yield* Effect.forEach(
          addresses,
          (_, i) =>
            Effect.map(
              Layer.buildWithScope(NodeNetwork.layer(configOf(i, addresses, broadcast, keys)), scope),
              (c) => Context.get(c, NodeNetwork)
            ),
          { concurrency: "unbounded" }
        )
        for (const follower of networks.slice(1)) {
          yield* Effect.forkIn(
            Stream.runForEachChunk(follower.messages, (chunk) =>
              Effect.sync(() => {
                for (const delivery of chunk) {
                  if (delivery.reliable === undefined) tagged.unreliable++
                  else tagged.reliable++
                }
                arrivals.add(chunk.length, now(), timed)
              })
            ),
            scope
          )
        }
        const leader = networks[0]!
        let missing = ""
        yield* Effect.gen(function* () {
          for (;;) {
            const atLeader = (yield* connected(leader)).length
            let toLeader = 0
            for (const follower of networks.slice(1)) {
              if ((yield* connected(follower)).includes(leader.self)) toLeader++
            }
            if (atLeader >= n - 1 && toLeader === n - 1) return
            missing = `leader connected to ${atLeader} of ${n - 1}, ${toLeader} followers to the leader`
            yield* Effect.sleep(Duration.millis(20))
          }
        }).pipe(
          Effect.timeoutFail({
            duration: Duration.millis(STEP_TIMEOUT_MS),
            onTimeout: () =>
              new Error(`validators not connected within ${STEP_TIMEOUT_MS / 1000} s: ${missing}`)
          })
        )
        return leader
      })
    )

    /**
     * Broadcasts `message` once; peers in the receipt's `failed` (Backpressure; for reliable, a full
     * peer buffer) get it again by `multicast` after a turn; a full node buffer: the broadcast again
     * after a turn. The receipts that took it, and the retries.
     */
    const broadcastAll = (reliable: boolean) =>
      Effect.gen(function* () {
        let retries = 0
        const receipts: Array<NodeNetwork.BroadcastReceipt> = []
        let receipt: NodeNetwork.BroadcastReceipt | undefined
        while (receipt === undefined) {
          const result = yield* Effect.either(leader.broadcast(appMessage, { reliable }))
          if (Either.isRight(result)) receipt = result.right
          else if (result.left._tag === "ReliableBufferFull") {
            retries++
            yield* yieldTurn
          } else return yield* Effect.fail(result.left)
        }
        receipts.push(receipt)
        let failed = receipt.failed
        while (failed.length > 0) {
          const fatal = failed.find(
            (f) => f.error._tag !== "Backpressure" && f.error._tag !== "ReliableBufferFull"
          )
          if (fatal !== undefined)
            return yield* Effect.fail(new Error(`broadcast failed: ${fatal.error._tag}`))
          retries++
          yield* yieldTurn
          const again = yield* Effect.either(
            leader.multicast(
              failed.map((f) => f.peer),
              appMessage,
              { reliable }
            )
          )
          if (Either.isLeft(again)) continue
          receipts.push(again.right)
          failed = again.right.failed
        }
        return { receipts, retries }
      })

    /** Waits until every recipient of each receipt acknowledged it. */
    const allAcked = (receipts: ReadonlyArray<NodeNetwork.BroadcastReceipt>) =>
      Effect.forEach(receipts, (r) => leader.awaitAcks(r, r.queued.length), { discard: true })

    const sideOf = (name: "unreliable" | "reliable" | "reliable-rto10s"): Side => {
      const reliable = name !== "unreliable"
      return {
        name,
        throughput: async (count) => {
          timed = false
          const done = arrivals.expect(count * (n - 1), `${name} throughput`)
          const counters = reliableCounters(labels)
          const cpu = cpuMicros()
          const started = now()
          const sent = await Effect.runPromise(
            Effect.gen(function* () {
              let retries = 0
              let last: ReadonlyArray<NodeNetwork.BroadcastReceipt> = []
              for (let i = 0; i < count; ) {
                const end = Math.min(i + WINDOW, count)
                for (; i < end; i++) {
                  const one = yield* broadcastAll(reliable)
                  retries += one.retries
                  last = one.receipts
                }
                yield* yieldTurn
              }
              return { retries, last }
            })
          )
          await done
          const deliveredNs = Number(arrivals.lastAt - started)
          let ackedNs: number | undefined
          if (reliable) {
            await Effect.runPromise(
              allAcked(sent.last).pipe(
                Effect.timeoutFail({
                  duration: Duration.millis(STEP_TIMEOUT_MS),
                  onTimeout: () => new Error("reliable throughput: acks not in")
                })
              )
            )
            ackedNs = Number(now() - started)
          }
          return {
            deliveredNs,
            ackedNs,
            retries: sent.retries,
            cpuMicros: cpuMicros() - cpu,
            counters: countersSince(labels, counters)
          }
        },
        one: async () => {
          timed = true
          const done = arrivals.expect(n - 1, `${name} latency`)
          const started = now()
          const { receipts } = await Effect.runPromise(broadcastAll(reliable))
          let acked: number | undefined
          const ackedPromise = reliable
            ? Effect.runPromise(allAcked(receipts)).then(() => {
                acked = Number(now() - started)
              })
            : Promise.resolve()
          await done
          await ackedPromise
          return { delivered: arrivals.times.map((at) => Number(at - started)), acked }
        },
        close: async () => {}
      }
    }

    return {
      unreliable: sideOf("unreliable"),
      reliable: sideOf(reliableName),
      tagged: () => ({ ...tagged }),
      close: () => Effect.runPromise(Scope.close(scope, Exit.void))
    }
  } catch (error) {
    await Effect.runPromise(Scope.close(scope, Exit.void))
    throw error
  }
}

// ---- the run ----

const info = () => ({ ...machine(), pinned: pinned ? "0-1" : false })

const us = (ns: number) => round(ns / 1e3, 1)
const sortedOf = (xs: ReadonlyArray<number>) => Float64Array.from(xs).sort()

const runSize = async (n: number) => {
  const count = messagesFor(n)
  const loadAtStart = loadAverage()
  log(`N=${n}: starting (load ${loadAtStart.join(" ")})`)
  const startedAt = now()
  const rawSet = await startRaw(n)
  const nodeSet = await startNodes(n).catch(async (error) => {
    await rawSet.close()
    throw error
  })
  const noTimerSet = SIDES.includes("reliable-rto10s")
    ? await startNodes(n, NO_TIMER, "reliable-rto10s", 100).catch(async (error) => {
        await nodeSet.close()
        await rawSet.close()
        throw error
      })
    : undefined
  log(`N=${n}: connected in ${round(Number(now() - startedAt) / 1e6, 0)} ms`)
  const sides: Partial<Record<SideName, Side>> = {
    raw: rawSet.raw,
    "raw+sig": rawSet.signed,
    unreliable: nodeSet.unreliable,
    reliable: nodeSet.reliable,
    ...(noTimerSet === undefined ? {} : { "reliable-rto10s": noTimerSet.reliable })
  }
  const running = SIDES.map((s) => sides[s]!)
  try {
    // ---- throughput ----
    const throughput: Record<SideName, Array<ThroughputRound>> = {
      raw: [],
      "raw+sig": [],
      unreliable: [],
      reliable: [],
      "reliable-rto10s": []
    }
    for (const side of running) await side.throughput(Math.min(count, 500)) // warm-up
    for (let r = 0; r < ROUNDS; r++) {
      for (let k = 0; k < running.length; k++) {
        const side = running[(r + k) % running.length]!
        throughput[side.name].push(await side.throughput(count))
      }
      log(
        `N=${n} throughput round ${r + 1}/${ROUNDS}: ${running
          .map((s) => `${s.name} ${Math.round(count / (throughput[s.name][r]!.deliveredNs / 1e9))}/s`)
          .join(", ")}; load ${loadAverage().join(" ")}`
      )
    }
    const rateOf = (side: SideName) => throughput[side].map((x) => count / (x.deliveredNs / 1e9))
    const medianRate = (side: SideName) => (throughput[side].length === 0 ? Number.NaN : median(rateOf(side)))
    const rawRate = medianRate("raw")
    const signedRate = medianRate("raw+sig")
    const unreliableRate = medianRate("unreliable")
    const ratios: Record<string, number | null> = {}
    const ratio = (a: number, b: number) => (Number.isFinite(a) && Number.isFinite(b) ? round(a / b) : null)
    for (const side of running) {
      const rounds = throughput[side.name]
      const rates = rateOf(side.name)
      const rate = medianRate(side.name)
      const acked = rounds.map((x) => x.ackedNs).filter((x): x is number => x !== undefined)
      const extra: Record<string, unknown> = {}
      if (side.name !== "raw") extra.ratioToRaw = ratio(rate, rawRate)
      const isReliable = side.name === "reliable" || side.name === "reliable-rto10s"
      if (side.name !== "raw" && side.name !== "raw+sig") extra.ratioToRawSig = ratio(rate, signedRate)
      if (isReliable) {
        extra.ratioToUnreliable = ratio(rate, unreliableRate)
        extra.roundRatiosToUnreliable = rates.map((x, i) =>
          throughput.unreliable[i] === undefined
            ? null
            : round(x / (count / (throughput.unreliable[i]!.deliveredNs / 1e9)))
        )
        extra.ackedMsgsPerSec = Math.round(median(acked.map((ns) => count / (ns / 1e9))))
        extra.ackedAfterLastDeliveryMs = round(
          median(rounds.map((x) => ((x.ackedNs ?? 0) - x.deliveredNs) / 1e6)),
          1
        )
        ratios[`N=${n} throughput ${side.name}/unreliable`] = extra.ratioToUnreliable as number | null
        const counted = rounds.map((x) => x.counters!)
        extra.retransmittedPerMessage = round(
          median(counted.map((c) => c.retransmitted / (count * (n - 1)))),
          2
        )
        extra.reliableCounters = counted
      }
      report({
        bench: "reliable",
        case: `throughput N=${n} 1KiB AppMessage`,
        side: side.name,
        validators: n,
        oneProcess: true,
        messages: count,
        msgsPerSec: Math.round(rate),
        rounds: rates.map(Math.round),
        ...extra,
        retries: rounds.map((x) => x.retries),
        cpuUsPerMessage: round(median(rounds.map((x) => x.cpuMicros / count)), 1),
        load: loadAverage(),
        ...info()
      })
    }

    // ---- latency ----
    // The raw RTT is taken two ways: paced like the broadcasts (one ping every INTERVAL_MS, in the
    // same rotation: the same wake-ups from idle on this shared machine; the goal's "one RTT"), and
    // back to back (a hot loop, for reference).
    type Paced = SideName | "rtt"
    const latency: Record<Paced, Array<LatencyRound>> = {
      raw: [],
      "raw+sig": [],
      unreliable: [],
      reliable: [],
      "reliable-rto10s": [],
      rtt: []
    }
    const rttSide = {
      name: "rtt" as const,
      one: async (): Promise<LatencyRound> => ({ delivered: [(await rawSet.rtt(1))[0]!], acked: undefined })
    }
    const paced: ReadonlyArray<{ readonly name: Paced; readonly one: () => Promise<LatencyRound> }> = [
      ...running.filter((side) => side.name !== "reliable-rto10s"),
      rttSide
    ]
    const hotRtt: Array<Float64Array> = []
    const latencyBlock = async (
      side: { readonly name: Paced; readonly one: () => Promise<LatencyRound> },
      rounds: number,
      keep: boolean
    ) => {
      let next = performance.now()
      for (let i = 0; i < rounds; i++) {
        const wait = next - performance.now()
        if (wait > 0) await sleep(wait)
        next = performance.now() + INTERVAL_MS
        const result = await side.one()
        if (keep) latency[side.name].push(result)
      }
    }
    for (const side of paced) await latencyBlock(side, 20, false) // warm-up
    await rawSet.rtt(200)
    for (let b = 0; b < LATENCY_BLOCKS; b++) {
      for (let k = 0; k < paced.length; k++) {
        await latencyBlock(paced[(b + k) % paced.length]!, LATENCY_PER_BLOCK, true)
      }
      hotRtt.push(await rawSet.rtt(LATENCY_PER_BLOCK * 5))
      log(`N=${n} latency block ${b + 1}/${LATENCY_BLOCKS} done; load ${loadAverage().join(" ")}`)
    }
    const pacedRtt = sortedOf(latency.rtt.map((r) => r.delivered[0]!))
    const hot = Bench.latency(hotRtt)
    const rtt = { p50Us: us(percentile(pacedRtt, 50)), p99Us: us(percentile(pacedRtt, 99)) }
    report({
      bench: "reliable",
      case: "raw TLS RTT, 1KiB out, Vote back (one process)",
      side: "raw",
      validators: n,
      pacedEveryMs: INTERVAL_MS,
      samples: pacedRtt.length,
      p50Us: rtt.p50Us,
      p99Us: rtt.p99Us,
      backToBack: { samples: hot.count, p50Us: hot.p50Us, p99Us: hot.p99Us },
      load: loadAverage(),
      ...info()
    })
    const summary = (side: Paced) => {
      const rounds = latency[side]
      const each = sortedOf(rounds.flatMap((r) => r.delivered))
      const last = sortedOf(rounds.map((r) => Math.max(...r.delivered)))
      const acked = sortedOf(rounds.map((r) => r.acked).filter((x): x is number => x !== undefined))
      return {
        rounds: rounds.length,
        deliveredP50Us: us(percentile(each, 50)),
        deliveredP99Us: us(percentile(each, 99)),
        lastDeliveredP50Us: us(percentile(last, 50)),
        lastDeliveredP99Us: us(percentile(last, 99)),
        ...(acked.length > 0
          ? { ackedP50Us: us(percentile(acked, 50)), ackedP99Us: us(percentile(acked, 99)) }
          : {})
      }
    }
    const unreliable = latency.unreliable.length > 0 ? summary("unreliable") : undefined
    const raw = latency.raw.length > 0 ? summary("raw") : undefined
    for (const side of paced) {
      if (side.name === "rtt") continue
      const result = summary(side.name)
      const extra: Record<string, unknown> = {}
      if (raw !== undefined && side.name !== "raw")
        extra.ratioToRawP50 = ratio(result.deliveredP50Us, raw.deliveredP50Us)
      if (side.name === "reliable" && unreliable !== undefined) {
        extra.ratioToUnreliableP50 = ratio(result.deliveredP50Us, unreliable.deliveredP50Us)
        extra.ratioToUnreliableP99 = ratio(result.deliveredP99Us, unreliable.deliveredP99Us)
        extra.addedP50Us = round(result.deliveredP50Us - unreliable.deliveredP50Us, 1)
        extra.addedP50InRtts = round((result.deliveredP50Us - unreliable.deliveredP50Us) / rtt.p50Us, 2)
        extra.addedP50InBackToBackRtts = round(
          (result.deliveredP50Us - unreliable.deliveredP50Us) / hot.p50Us,
          2
        )
        extra.ackedP50InRtts = round((result.ackedP50Us ?? Number.NaN) / rtt.p50Us, 1)
        ratios[`N=${n} latency p50 added, in raw RTTs`] = extra.addedP50InRtts as number
      }
      report({
        bench: "reliable",
        case: `latency N=${n} 1KiB AppMessage, one every ${INTERVAL_MS} ms`,
        side: side.name,
        validators: n,
        oneProcess: true,
        ...result,
        ...extra,
        rawRttP50Us: rtt.p50Us,
        rawBackToBackRttP50Us: hot.p50Us,
        load: loadAverage(),
        ...info()
      })
    }
    const tagged = nodeSet.tagged()
    return { ratios, tagged, loadAtStart, loadAtEnd: loadAverage() }
  } finally {
    await noTimerSet?.close()
    await nodeSet.close()
    await rawSet.close()
  }
}

const main = async () => {
  const started = now()
  const ratios: Record<string, number | null> = {}
  const loads: Record<string, unknown> = {}
  for (const n of SIZES) {
    const result = await runSize(n)
    Object.assign(ratios, result.ratios)
    loads[`N=${n}`] = { start: result.loadAtStart, end: result.loadAtEnd, deliveriesTagged: result.tagged }
  }
  const target = (name: string, key: string, met: (r: number) => boolean) => ({
    target: name,
    value: ratios[key] ?? null,
    met: ratios[key] === undefined || ratios[key] === null ? null : met(ratios[key]!)
  })
  report({
    bench: "reliable",
    case: "summary",
    ratios,
    targets: SIZES.flatMap((n) => [
      target(
        `N=${n}: reliable throughput >= 0.85 x unreliable`,
        `N=${n} throughput reliable/unreliable`,
        (r) => r >= 0.85
      ),
      target(
        `N=${n}: reliable p50 delivery <= unreliable + 1 raw RTT`,
        `N=${n} latency p50 added, in raw RTTs`,
        (r) => r <= 1
      )
    ]),
    loads,
    seconds: round(Number(now() - started) / 1e9, 1),
    gcMs: round(gcMillis(), 0),
    ...info()
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
