// Transport benchmark: TlsTransport, TcpTransport and QuicTransport against raw node:tls / node:net
// sockets carrying the same frames with the same write coalescing, measured in the same run, two
// processes on 127.0.0.1 (QUIC's baseline is raw node:tls, the thing it would replace). This process sends; a forked receiver process (receiver.ts) counts or echoes.
//
// - one-way: a fixed number of messages per round, timed from the first send to the receiver's
//   receipt of the last (both clocks are CLOCK_MONOTONIC), raw and transport rounds interleaved;
//   median msgs/s and every round.
// - ping-pong: round-trip time of one 128 B message at a time, after warm-up, in blocks that
//   alternate raw and transport; p50/p99 over all samples.
//
// One JSON line per result on stdout, then a summary line with every ratio and the issue's targets
// (reported, not asserted); progress on stderr. Transport lines carry `ratioToRaw`; one-way lines
// also carry each process's CPU and GC time over wall time, frames per socket write and frames per
// delivery at the receiver, to show which side limits and why.
//
// Env: BENCH_ROUNDS (default 7), BENCH_QUICK=1 (a tenth of the messages), BENCH_PIN=0 (don't pin
// this process to CPU 0 and the receivers to CPU 1 with taskset), BENCH_ONLY=tls|tcp|quic,
// BENCH_CASES=comma-separated subset of "1KiB,128B,64KiB,rtt" (default all but 128B for QUIC),
// BENCH_QUIC_PAYLOAD (QUIC's UDP payload, default 1350), BENCH_IMPL=raw|transport (one side only,
// to profile it), BENCH_CHILD_NODE_OPTIONS (extra node flags for the receivers, e.g. --cpu-prof).
// Profiling: `npx tsc -b` then `node --cpu-prof dist/bench/transport.bench.js` runs compiled code
// (tsx's transpiled code maps poorly in profiles).
import type * as net from "node:net"
import { Bench, BenchProcess, RawSocket } from "@hotstuff2/testing"
import { Frame } from "@hotstuff2/wire"
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as Scope from "effect/Scope"
import {
  QuicTransport,
  TcpTransport,
  TlsTransport,
  Transport,
  TransportConfig,
  TransportError
} from "../src/index.js"

const { gcMillis, machine, median, now, report, round } = Bench

import {
  encodeFrame,
  type Mode,
  payload,
  quicOptions,
  receiverIdentity,
  senderIdentity,
  tlsMaterial,
  tlsVersions,
  transportConfig
} from "./setup.js"

Bench.resultsOnStdout()

const { consensus } = TransportConfig.Channel
gcMillis() // starts counting

// ---- parameters ----

const quick = process.env.BENCH_QUICK === "1"
const ROUNDS = Math.max(1, Math.min(15, Number(process.env.BENCH_ROUNDS ?? 7) || 7))
/** Messages queued per event-loop turn before yielding with setImmediate. */
const WINDOW = 512
const ONE_WAY = [
  { name: "1KiB", bytes: 1024, count: quick ? 20_000 : 200_000 },
  { name: "128B", bytes: 128, count: quick ? 50_000 : 500_000 },
  { name: "64KiB", bytes: 64 * 1024, count: quick ? 300 : 3_000 }
] as const
const PING_PONG = { bytes: 128, warmup: quick ? 500 : 2_000, blocks: 4, perBlock: quick ? 500 : 5_000 }
/** Any single round, handshake or command that takes longer than this fails the run. */
const STEP_TIMEOUT_MS = 60_000
/** The whole benchmark, including start-up: past this everything is killed. */
const DEADLINE_MS = 12 * 60_000
type Kind = "tls" | "tcp" | "quic"
const kinds = (["tls", "tcp", "quic"] as const).filter((k) => (process.env.BENCH_ONLY ?? k) === k)
/** QUIC moves 128 B messages the way it moves 1 KiB ones (frames joined by the core): not run by default. */
const selectedFor = (kind: Kind) =>
  new Set(
    (process.env.BENCH_CASES ?? (kind === "quic" ? "1KiB,64KiB,rtt" : "1KiB,128B,64KiB,rtt")).split(",")
  )
/** The raw baseline of each kind: QUIC is compared with raw node:tls. */
const rawOf = (kind: Kind): "tls" | "tcp" => (kind === "tcp" ? "tcp" : "tls")

const { log, pinned, start } = BenchProcess.supervise("transport.bench", {
  deadlineMs: DEADLINE_MS,
  stepTimeoutMs: STEP_TIMEOUT_MS
})

// ---- processes ----

/** A forked receiver process (bench/receiver.ts) and where it listens. */
type Receiver = BenchProcess.BenchChild & { readonly address: string }

const startReceiver = async (mode: Mode): Promise<Receiver> => {
  const { child, first } = await start(import.meta.url, "receiver", [mode], "listening")
  return Object.assign(child, { address: first.type === "listening" ? first.address : "" })
}

// ---- raw baseline (the shared RawSocket helpers: same framing, same coalescing) ----

const connectRaw = (kind: "tls" | "tcp", address: string): Promise<net.Socket> =>
  RawSocket.connect(kind, address, { ...tlsMaterial(senderIdentity), ...tlsVersions }, STEP_TIMEOUT_MS)

/** Sends `count` messages, each its own frame, WINDOW per corked write; waits for 'drain' when full. */
const pumpRaw = (socket: net.Socket, message: Uint8Array, count: number): Promise<number> =>
  RawSocket.pump(socket, () => encodeFrame(message), count, { window: WINDOW, timeoutMs: STEP_TIMEOUT_MS })

/** Round-trip times (ns) of `n` messages sent one at a time over a raw socket. */
const pingPongRaw = (socket: net.Socket, message: Uint8Array, n: number): Promise<Float64Array> =>
  RawSocket.pingPong(socket, () => encodeFrame(message), new Frame.FrameDecoder(), n, STEP_TIMEOUT_MS)

// ---- our transport ----

interface Link {
  readonly connection: Transport.Connection
  readonly close: () => Promise<void>
}

const openTransport = async (kind: Kind, address: string): Promise<Link> => {
  const scope = Effect.runSync(Scope.make())
  const layer =
    kind === "tls"
      ? TlsTransport.layer({ identity: senderIdentity, config: transportConfig })
      : kind === "quic"
        ? QuicTransport.layer({ identity: senderIdentity, config: transportConfig, quic: quicOptions })
        : TcpTransport.layer({ identity: senderIdentity, config: transportConfig, allowUnencrypted: true })
  const connection = await Effect.runPromise(
    Effect.gen(function* () {
      const context = yield* Layer.buildWithScope(layer, scope)
      return yield* Context.get(context, Transport.Transport).dial(address, receiverIdentity.peerId)
    }).pipe(Effect.timeout(Duration.millis(STEP_TIMEOUT_MS)))
  )
  return { connection, close: () => Effect.runPromise(Scope.close(scope, Exit.void)) }
}

const yieldTurn = Effect.async<void>((resume) => {
  setImmediate(() => resume(Effect.void))
})

/**
 * Sends `count` messages with `connection.unsafeSend` (the hot-loop form of `send`), one message per
 * frame as an application would, up to
 * WINDOW per event-loop turn; on `Backpressure` waits a turn and retries that message. Returns how
 * many retries it took.
 */
const pumpTransport = (connection: Transport.Connection, message: Uint8Array, count: number) =>
  Effect.gen(function* () {
    let retries = 0
    for (let sent = 0; sent < count; ) {
      const end = Math.min(sent + WINDOW, count)
      while (sent < end) {
        const error = connection.unsafeSend(consensus, [message])
        if (error === undefined) {
          sent++
        } else if (error._tag === "Backpressure") {
          retries++
          yield* yieldTurn
        } else {
          return yield* Effect.fail(error)
        }
      }
      yield* yieldTurn
    }
    return retries
  }).pipe(
    Effect.timeoutFail({
      duration: Duration.millis(STEP_TIMEOUT_MS),
      onTimeout: () => new Error("transport send timed out")
    })
  )

/** Round-trip times (ns) of `n` messages sent one at a time, each awaited with `connection.receive`. */
const pingPongTransport = (connection: Transport.Connection, message: Uint8Array, n: number) =>
  Effect.gen(function* () {
    const receive = Effect.catchAll(connection.receive, () => Effect.dieMessage("connection closed"))
    const samples = new Float64Array(n)
    for (let i = 0; i < n; i++) {
      const sentAt = now()
      yield* connection.send(consensus, [message])
      let frames = 0
      while (frames === 0) frames += (yield* receive).length
      samples[i] = Number(now() - sentAt)
    }
    return samples
  }).pipe(
    Effect.timeoutFail({
      duration: Duration.millis(STEP_TIMEOUT_MS),
      onTimeout: () => new Error("transport ping-pong timed out")
    })
  )

// ---- cases ----

const info = { ...machine(), pinned, window: WINDOW }

const { timedRound } = BenchProcess

const oneWayRawRound = (receiver: Receiver, socket: net.Socket, message: Uint8Array, count: number) =>
  timedRound(receiver, count, () => pumpRaw(socket, message, count))

const oneWayTransportRound = async (
  receiver: Receiver,
  connection: Transport.Connection,
  message: Uint8Array,
  count: number
) => {
  const before = await Effect.runPromise(connection.stats)
  const round = await timedRound(receiver, count, () =>
    Effect.runPromise(pumpTransport(connection, message, count))
  )
  const after = await Effect.runPromise(connection.stats)
  return { ...round, writes: after.writes - before.writes }
}

interface Ratio {
  readonly transport: string
  readonly case: string
  readonly ratio: number
}
const ratios: Array<Ratio> = []

type Side = "raw" | "transport"
/** BENCH_IMPL=raw or transport runs one side only (to profile it); ratios need both. */
const sides: ReadonlyArray<Side> = (["raw", "transport"] as const).filter(
  (side) => (process.env.BENCH_IMPL ?? side) === side
)

const implName = (kind: Kind, side: Side): string =>
  side === "raw"
    ? rawOf(kind) === "tls"
      ? "raw node:tls"
      : "raw node:net"
    : kind === "tls"
      ? "TlsTransport"
      : kind === "quic"
        ? `QuicTransport (UDP payload ${quicOptions.maxUdpPayloadBytes})`
        : "TcpTransport"

const runOneWay = async (
  kind: Kind,
  spec: (typeof ONE_WAY)[number],
  raw: { receiver: Receiver; socket: net.Socket },
  ours: { receiver: Receiver; connection: Transport.Connection }
) => {
  const message = payload(spec.bytes)
  const frameBytes = encodeFrame(message).length
  const roundOf = async (side: Side) =>
    side === "raw"
      ? { ...(await oneWayRawRound(raw.receiver, raw.socket, message, spec.count)), retries: 0 }
      : await oneWayTransportRound(ours.receiver, ours.connection, message, spec.count).then((r) => ({
          ...r,
          retries: r.result,
          result: r.writes
        }))
  log(`${kind} one-way ${spec.name}: warm-up`)
  for (const side of sides) await roundOf(side)
  const rounds: Record<Side, Array<Awaited<ReturnType<typeof roundOf>>>> = { raw: [], transport: [] }
  for (let r = 0; r < ROUNDS; r++) {
    for (const side of sides) rounds[side].push(await roundOf(side))
    log(
      `${kind} one-way ${spec.name} round ${r + 1}: ${sides.map((side) => `${side} ${Math.round(rounds[side][r]!.rate)}`).join(", ")}`
    )
  }
  const rawRates = rounds.raw.map((x) => x.rate)
  const common = {
    bench: "transport",
    case: `one-way ${spec.name}`,
    transport: kind,
    messages: spec.count,
    payloadBytes: spec.bytes,
    frameBytes
  }
  for (const side of sides) {
    const results = rounds[side]
    const rates = results.map((x) => x.rate)
    const rate = median(rates)
    const ratio = side === "transport" && rawRates.length > 0 ? round(rate / median(rawRates)) : undefined
    if (ratio !== undefined) ratios.push({ transport: kind, case: `one-way ${spec.name}`, ratio })
    report({
      ...common,
      impl: implName(kind, side),
      opsPerSec: Math.round(rate),
      rounds: rates.map(Math.round),
      mbitPerSec: round((rate * frameBytes * 8) / 1e6, 0),
      ...(ratio !== undefined
        ? { ratioToRaw: ratio, roundRatios: rates.map((x, i) => round(x / rawRates[i]!)) }
        : {}),
      ...(side === "transport" ? { backpressureRetries: results.map((x) => x.retries) } : {}),
      // Frames per socket write: raw per corked window, transport from the core's `writes` counter.
      framesPerWrite: round(spec.count / median(results.map((x) => x.result)), 1),
      // Frames per delivery at the receiver: a 'data' event, or a chunk of `connection.frames`.
      framesPerReceive: round(median(results.map((x) => x.perReceive)), 1),
      // CPU time over wall time of each process, median over rounds: 1 is one core busy.
      senderCpu: round(median(results.map((x) => x.senderCpu)), 2),
      receiverCpu: round(median(results.map((x) => x.receiverCpu)), 2),
      // Time in garbage collection over wall time, the same way.
      senderGc: round(median(results.map((x) => x.senderGc)), 2),
      receiverGc: round(median(results.map((x) => x.receiverGc)), 2),
      ...info
    })
  }
}

const latency = (samples: ReadonlyArray<Float64Array>) => {
  const { count, meanNanos, ...percentiles } = Bench.latency(samples)
  return {
    opsPerSec: Math.round(1e9 / meanNanos),
    rounds: samples.map((s) => Math.round(s.length / (s.reduce((a, b) => a + b, 0) / 1e9))),
    roundTrips: count,
    ...percentiles
  }
}

const runPingPong = async (
  kind: Kind,
  raw: { receiver: Receiver; socket: net.Socket },
  ours: { receiver: Receiver; connection: Transport.Connection }
) => {
  const message = payload(PING_PONG.bytes)
  const block = (side: Side, n: number) =>
    side === "raw"
      ? pingPongRaw(raw.socket, message, n)
      : Effect.runPromise(pingPongTransport(ours.connection, message, n))
  for (const side of sides) await (side === "raw" ? raw : ours).receiver.command({ type: "echo" })
  log(`${kind} ping-pong: warm-up`)
  for (const side of sides) await block(side, PING_PONG.warmup)
  const blocks: Record<Side, Array<Float64Array>> = { raw: [], transport: [] }
  for (let b = 0; b < PING_PONG.blocks; b++) {
    for (const side of sides) blocks[side].push(await block(side, PING_PONG.perBlock))
  }
  const rawLatency = blocks.raw.length > 0 ? latency(blocks.raw) : undefined
  for (const side of sides) {
    const result = latency(blocks[side])
    let ratio = {}
    if (side === "transport" && rawLatency !== undefined) {
      const p50 = round(result.p50Us / rawLatency.p50Us)
      const p99 = round(result.p99Us / rawLatency.p99Us)
      ratios.push({ transport: kind, case: "rtt p50", ratio: p50 })
      ratios.push({ transport: kind, case: "rtt p99", ratio: p99 })
      ratio = { ratioToRaw: p50, p99RatioToRaw: p99 }
    }
    report({
      bench: "transport",
      case: `ping-pong ${PING_PONG.bytes}B`,
      transport: kind,
      payloadBytes: PING_PONG.bytes,
      warmup: PING_PONG.warmup,
      impl: implName(kind, side),
      ...result,
      ...ratio,
      ...info
    })
  }
}

const runKind = async (kind: Kind) => {
  log(`${kind}: starting receivers`)
  const selected = selectedFor(kind)
  const [rawReceiver, ourReceiver] = await Promise.all([
    startReceiver(`raw-${rawOf(kind)}`),
    startReceiver(`transport-${kind}`)
  ])
  let socket: net.Socket | undefined
  let link: Link | undefined
  try {
    socket = await connectRaw(rawOf(kind), rawReceiver.address)
    link = await openTransport(kind, ourReceiver.address)
    const raw = { receiver: rawReceiver, socket }
    const ours = { receiver: ourReceiver, connection: link.connection }
    for (const spec of ONE_WAY) if (selected.has(spec.name)) await runOneWay(kind, spec, raw, ours)
    if (selected.has("rtt")) await runPingPong(kind, raw, ours)
  } finally {
    socket?.destroy()
    await link?.close()
    await Promise.all([rawReceiver.stop(), ourReceiver.stop()])
  }
}

const main = async () => {
  const started = now()
  for (const kind of kinds) await runKind(kind)
  const find = (transport: string, name: string) =>
    ratios.find((r) => r.transport === transport && r.case === name)?.ratio
  const oneWay = find("tls", "one-way 1KiB")
  const rtt = find("tls", "rtt p50")
  report({
    bench: "transport",
    case: "summary",
    ratiosToRaw: Object.fromEntries(ratios.map((r) => [`${r.transport} ${r.case}`, r.ratio])),
    targets: [
      {
        target: "TLS one-way 1KiB >= 0.7x raw",
        ratio: oneWay ?? null,
        met: oneWay === undefined ? null : oneWay >= 0.7
      },
      { target: "TLS RTT p50 <= 1.2x raw", ratio: rtt ?? null, met: rtt === undefined ? null : rtt <= 1.2 }
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
    if (error instanceof TransportError.DialError) log(JSON.stringify(error))
    process.exit(1)
  }
)
