// CPU per message on one thread: two validators in this process over TLS on 127.0.0.1, against two
// raw node:tls sockets in this process carrying the same frames. With both ends on one thread, the
// process's CPU time per round trip (or per one-way message) is the whole cost of both sides: no
// wake-up of an idle process, no waiting for the other core. So it moves little when the machine is
// busy, unlike the two-process latencies of node.bench.ts, and it is what a profile of the path
// should explain (`node --cpu-prof` or `perf record` with `--perf-basic-prof` on this script).
//
// - ping-pong: validator 0 `send`s a Vote, validator 1 `receive`s it and answers with one; CPU and
//   Effect operations (counted by a supervisor, in a separate pass) per round trip.
// - one-way: validator 0 `send`s 1 KiB Proposals (as node.bench.ts's pump), validator 1 `receive`s
//   them; CPU per message, and the share spent in the send loop itself.
//
// `npm run bench:cpu` (built first). Env: CPU_ROUNDS (default 5), BENCH_CONSUMER=stream (both
// validators take messages through `Stream.toPull(messages)` instead of `receive`).
import * as tls from "node:tls"
import { Bench, RawSocket } from "@hotstuff2/testing"
import { Frame } from "@hotstuff2/wire"
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import * as RuntimeFlags from "effect/RuntimeFlags"
import * as RuntimeFlagsPatch from "effect/RuntimeFlagsPatch"
import * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import * as Supervisor from "effect/Supervisor"
import { NodeNetwork } from "../src/index.js"
import { reservePorts } from "../src/internal/ports.js"
import { benchConfig, directSlot, encodeFrame, identity, proposal, tlsMaterial, vote } from "./setup.js"

Bench.resultsOnStdout()

const { machine, median, report, round } = Bench
/** How both validators take messages: `receive` (default), or `Stream.toPull(messages)`. */
const consumerKind = process.env.BENCH_CONSUMER === "stream" ? "stream" : "receive"
const ROUNDS = Math.max(1, Math.min(15, Number(process.env.CPU_ROUNDS ?? 5) || 5))
const ROUND_TRIPS = 10_000
const ONE_WAY = 100_000
const WINDOW = 512

const cpuMicros = (): number => {
  const c = process.cpuUsage()
  return c.user + c.system
}
const log = (text: string): void => {
  process.stderr.write(`[cpu.bench] ${text}\n`)
}

// ---- raw node:tls: both ends in this process ----

const rawPair = async () => {
  /** Set during a one-way run: the server counts frames instead of answering each. */
  let onServerFrame: (() => void) | undefined
  const server = tls.createServer(
    { ...tlsMaterial(identity(1)), requestCert: true, rejectUnauthorized: false },
    (socket) => {
      socket.setNoDelay(true)
      const decoder = new Frame.FrameDecoder()
      const pong = encodeFrame(directSlot(vote(1n, identity(1).peerId)))
      socket.on("data", (chunk: Buffer) => {
        decoder.push(chunk, () => {
          if (onServerFrame === undefined) socket.write(pong)
          else onServerFrame()
        })
      })
    }
  )
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve))
  const port = (server.address() as { port: number }).port
  const socket = tls.connect({
    ...tlsMaterial(identity(0)),
    host: "127.0.0.1",
    port,
    rejectUnauthorized: false,
    noDelay: true
  } as tls.ConnectionOptions)
  await new Promise<void>((resolve) => socket.once("secureConnect", resolve))
  const decoder = new Frame.FrameDecoder()
  let onReply = (): void => {}
  socket.on("data", (chunk: Buffer) => decoder.push(chunk, () => onReply()))
  const ping = encodeFrame(directSlot(vote(1n, identity(0).peerId)))
  const pingPong = async (n: number) => {
    for (let i = 0; i < n; i++) {
      await new Promise<void>((resolve) => {
        onReply = resolve
        socket.write(ping)
      })
    }
  }
  const frame = encodeFrame(directSlot(proposal(1n, identity(0).peerId, 1024)))
  /** `n` frames as node.bench.ts's raw sender writes them (RawSocket.pump), until the last arrives. */
  const oneWay = (n: number) =>
    new Promise<void>((resolve, reject) => {
      let received = 0
      onServerFrame = () => {
        if (++received === n) {
          onServerFrame = undefined
          resolve()
        }
      }
      RawSocket.pump(socket, () => frame, n, { window: WINDOW, timeoutMs: 60_000 }).catch(reject)
    })
  return {
    pingPong,
    oneWay,
    close: () => {
      socket.destroy()
      server.close()
    }
  }
}

// ---- two validators in this process ----

let ops = 0
class CountOps extends Supervisor.AbstractSupervisor<void> {
  readonly value = Effect.void
  override onEffect(): void {
    ops++
  }
}
const counted = <A, E>(effect: Effect.Effect<A, E>) =>
  Effect.withRuntimeFlagsPatch(
    Effect.supervised(effect, new CountOps()),
    RuntimeFlagsPatch.enable(RuntimeFlags.OpSupervision)
  )

const yieldTurn = Effect.async<void>((resume) => {
  setImmediate(() => resume(Effect.void))
})

const nodePair = Effect.gen(function* () {
  const addresses = (yield* reservePorts(2)).map((port) => `127.0.0.1:${port}`)
  const scope = yield* Scope.make()
  const start = (n: number) =>
    Effect.map(Layer.buildWithScope(NodeNetwork.layer(benchConfig(n, addresses)), scope), (context) =>
      Context.get(context, NodeNetwork)
    )
  const a = yield* start(0)
  const b = yield* start(1)
  const toB = identity(1).peerId
  const takeOf = (net: NodeNetwork.Shape) =>
    consumerKind === "receive"
      ? Effect.succeed(net.receive)
      : Effect.map(Scope.extend(Stream.toPull(net.messages), scope), Effect.orDie)
  const takeA = yield* takeOf(a)
  const takeB = yield* takeOf(b)
  yield* Effect.gen(function* () {
    while (!(yield* a.peers).some((p) => p.id === toB && p.state === "connected"))
      yield* Effect.sleep(Duration.millis(20))
  }).pipe(Effect.timeoutFail({ duration: Duration.seconds(60), onTimeout: () => new Error("no connection") }))
  const pong = vote(1n, toB)
  let echo = true
  let received = 0
  // Validator 1: answers each message with a Vote, or counts them (one-way).
  const consumer = Effect.gen(function* () {
    for (;;) {
      const chunk = yield* takeB
      if (!echo) received += chunk.length
      else for (const d of chunk) yield* Effect.ignore(b.send(d.from, pong))
    }
  })
  let consumerFiber = yield* Effect.forkIn(consumer, scope)
  const ping = vote(1n, identity(0).peerId)
  const pingPong = (n: number) =>
    Effect.gen(function* () {
      echo = true
      for (let i = 0; i < n; i++) {
        yield* a.send(toB, ping)
        let got = 0
        while (got === 0) got += (yield* takeA).length
      }
    })
  const message = proposal(1n, identity(0).peerId, 1024)
  /** `n` sends as node.bench.ts's pump; returns the CPU (us) of the send loops alone. */
  const oneWay = (n: number) =>
    Effect.gen(function* () {
      echo = false
      const target = received + n
      let sendMicros = 0
      for (let sent = 0; sent < n; ) {
        const end = Math.min(sent + WINDOW, n)
        const before = cpuMicros()
        while (sent < end) {
          const result = yield* Effect.either(a.send(toB, message))
          if (Either.isRight(result)) sent++
          else break
        }
        sendMicros += cpuMicros() - before
        yield* yieldTurn
      }
      while (received < target) yield* yieldTurn
      return sendMicros
    })
  return {
    pingPong,
    oneWay,
    /** The ping-pong with every Effect operation of both validators' loops counted. */
    countOps: (n: number) =>
      Effect.gen(function* () {
        yield* Fiber.interrupt(consumerFiber)
        consumerFiber = yield* Effect.forkIn(counted(consumer), scope)
        yield* counted(pingPong(n))
      }),
    close: Scope.close(scope, Exit.void)
  }
})

// ---- the cases ----

const perUnit = async (n: number, run: () => Promise<unknown>) => {
  const before = cpuMicros()
  await run()
  return (cpuMicros() - before) / n
}

const main = async () => {
  const info = { ...machine(), roundsRun: ROUNDS, consumer: consumerKind }
  const raw = await rawPair()
  const node = await Effect.runPromise(nodePair)
  try {
    log("warm-up")
    await raw.pingPong(3000)
    await Effect.runPromise(node.pingPong(3000))
    await raw.oneWay(20_000)
    await Effect.runPromise(node.oneWay(20_000))
    const rtt = { raw: [] as Array<number>, node: [] as Array<number> }
    const oneWay = { raw: [] as Array<number>, node: [] as Array<number>, send: [] as Array<number> }
    for (let r = 0; r < ROUNDS; r++) {
      rtt.raw.push(await perUnit(ROUND_TRIPS, () => raw.pingPong(ROUND_TRIPS)))
      rtt.node.push(await perUnit(ROUND_TRIPS, () => Effect.runPromise(node.pingPong(ROUND_TRIPS))))
      oneWay.raw.push(await perUnit(ONE_WAY, () => raw.oneWay(ONE_WAY)))
      let send = 0
      oneWay.node.push(
        await perUnit(ONE_WAY, async () => {
          send = await Effect.runPromise(node.oneWay(ONE_WAY))
        })
      )
      oneWay.send.push(send / ONE_WAY)
      log(`round ${r + 1}: RTT CPU raw ${round(rtt.raw[r]!, 1)} us, node ${round(rtt.node[r]!, 1)} us`)
    }
    ops = 0
    await Effect.runPromise(node.countOps(ROUND_TRIPS))
    const opsPerRoundTrip = round(ops / ROUND_TRIPS, 1)
    const rawRtt = median(rtt.raw)
    const nodeRtt = median(rtt.node)
    report({
      bench: "node-cpu",
      case: "ping-pong Vote, both ends in one process",
      cpuUsPerRoundTrip: { raw: round(rawRtt, 1), node: round(nodeRtt, 1) },
      ratio: round(nodeRtt / rawRtt),
      rounds: { raw: rtt.raw.map((x) => round(x, 1)), node: rtt.node.map((x) => round(x, 1)) },
      effectOpsPerRoundTrip: opsPerRoundTrip,
      ...info
    })
    const rawOne = median(oneWay.raw)
    const nodeOne = median(oneWay.node)
    report({
      bench: "node-cpu",
      case: "one-way 1KiB Proposal, both ends in one process",
      cpuUsPerMessage: {
        raw: round(rawOne, 2),
        node: round(nodeOne, 2),
        nodeSendLoop: round(median(oneWay.send), 2)
      },
      ratio: round(nodeOne / rawOne),
      rounds: { raw: oneWay.raw.map((x) => round(x, 2)), node: oneWay.node.map((x) => round(x, 2)) },
      ...info
    })
  } finally {
    raw.close()
    await Effect.runPromise(node.close)
  }
}

main().then(
  () => process.exit(0),
  (error: unknown) => {
    log(`failed: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}`)
    process.exit(1)
  }
)
