// A vote's latency while a large sync transfer runs on another channel, on a lossy path: TLS (one
// TCP stream: a lost segment holds back every byte behind it) against QUIC (a stream per channel:
// a lost packet of the sync stream delays only the sync stream). The path is the loopback of a
// network namespace of its own where nft drops a random share of every packet (`tc netem` does not
// exist on these machines, so no delay is added: loopback's RTT is tens of microseconds, and a loss
// costs what each protocol's recovery costs).
//
// Run as root: `npm run bench:lossy` (LOSSY_PERCENT, default 2; LOSSY_VOTES, default 300). It makes
// the namespace `hs2lossy<pid>`, runs itself inside it (HS2_LOSSY_INNER=1), prints one JSON line per
// transport and removes the namespace. test/quicLossy.test.ts runs it and asserts what is robust.
import { execFileSync, spawn } from "node:child_process"
import { Bench } from "@hotstuff2/testing"
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Stream from "effect/Stream"
import { QuicTransport, TlsTransport, Transport, TransportConfig } from "../src/index.js"
import { receiverIdentity, senderIdentity } from "./setup.js"

Bench.resultsOnStdout()

const LOSS = Number(process.env.LOSSY_PERCENT ?? 2)
const VOTES = Number(process.env.LOSSY_VOTES ?? 300)
const VOTE_EVERY_MS = 10
const SYNC_FRAME = 64 * 1024
/** Sync frames kept queued (LOSSY_SYNC=0: no transfer, the votes alone). */
const SYNC_QUEUE = Number(process.env.LOSSY_SYNC ?? 8)
const { consensus, sync } = TransportConfig.Channel

const config: TransportConfig.TransportConfigInput = { networkId: "hotstuff2-lossy" }

interface Outcome {
  readonly transport: "tls" | "quic"
  readonly lossPercent: number
  readonly votes: number
  readonly received: number
  readonly inOrder: boolean
  readonly p50Ms: number
  readonly p90Ms: number
  readonly p99Ms: number
  readonly maxMs: number
  readonly syncMbitPerSec: number
}

const layerOf = (kind: "tls" | "quic", identity: typeof senderIdentity) =>
  kind === "tls" ? TlsTransport.layer({ identity, config }) : QuicTransport.layer({ identity, config })

const percentile = (sorted: ReadonlyArray<number>, p: number) =>
  sorted[Math.min(sorted.length - 1, Math.floor((sorted.length * p) / 100))] ?? Number.NaN

const scenario = (kind: "tls" | "quic") =>
  Effect.gen(function* () {
    const build = (id: typeof senderIdentity) =>
      Effect.map(Layer.build(layerOf(kind, id)), (c) => Context.get(c, Transport.Transport))
    const receiverSide = yield* build(receiverIdentity)
    const senderSide = yield* build(senderIdentity)
    const listener = yield* receiverSide.listen("127.0.0.1:0")
    const connection = yield* senderSide.dial(listener.address, receiverIdentity.peerId)
    const inbound = yield* Stream.runHead(listener.connections).pipe(
      Effect.flatMap((o) =>
        o._tag === "Some" ? Effect.succeed(o.value) : Effect.dieMessage("listener closed")
      )
    )
    const latencies: Array<number> = []
    const order: Array<number> = []
    let syncBytes = 0
    inbound.unsafeReceive((frame) => {
      if (frame.channel === consensus) {
        for (const m of frame.messages) {
          const view = new DataView(m.buffer, m.byteOffset, m.byteLength)
          order.push(view.getUint32(0))
          latencies.push(performance.now() - view.getFloat64(8))
        }
      } else if (frame.channel === sync) for (const m of frame.messages) syncBytes += m.length
      return true
    })
    const block = new Uint8Array(SYNC_FRAME).fill(7)
    const started = performance.now()
    // Keeps a few sync frames queued at all times: the transfer never pauses.
    const topUp = setInterval(() => {
      const queued = Effect.runSync(connection.stats).queued[sync]?.frames ?? 0
      for (let i = queued; i < SYNC_QUEUE; i++) connection.unsafeSend(sync, [block])
    }, 2)
    for (let i = 0; i < VOTES; i++) {
      yield* Effect.sleep(Duration.millis(VOTE_EVERY_MS))
      const vote = new Uint8Array(96)
      const view = new DataView(vote.buffer)
      view.setUint32(0, i)
      view.setFloat64(8, performance.now())
      connection.unsafeSend(consensus, [vote])
    }
    // Every vote, or a generous deadline (a lost vote shows as missing, never as a hang).
    const deadline = performance.now() + 30_000
    while (order.length < VOTES && performance.now() < deadline) yield* Effect.sleep(Duration.millis(20))
    clearInterval(topUp)
    const seconds = (performance.now() - started) / 1000
    const sorted = [...latencies].sort((a, b) => a - b)
    const round = (x: number) => Math.round(x * 100) / 100
    return {
      transport: kind,
      lossPercent: LOSS,
      votes: VOTES,
      received: order.length,
      inOrder: order.every((n, i) => n === i),
      p50Ms: round(percentile(sorted, 50)),
      p90Ms: round(percentile(sorted, 90)),
      p99Ms: round(percentile(sorted, 99)),
      maxMs: round(sorted[sorted.length - 1] ?? Number.NaN),
      syncMbitPerSec: round((syncBytes * 8) / seconds / 1e6)
    } satisfies Outcome
  }).pipe(Effect.scoped)

const inner = async () => {
  for (const kind of ["tls", "quic"] as const) {
    const outcome = await Effect.runPromise(scenario(kind))
    Bench.report({
      bench: "transport-lossy",
      case: `vote latency under ${LOSS}% loss with a sync transfer`,
      ...outcome,
      ...Bench.machine()
    })
  }
}

const outer = async () => {
  const ns = `hs2lossy${process.pid}`
  const run = (...args: Array<string>) => execFileSync("ip", args, { stdio: "pipe" })
  run("netns", "add", ns)
  try {
    run("netns", "exec", ns, "ip", "link", "set", "lo", "up")
    const rules = [
      "add table inet lossy",
      "add chain inet lossy out { type filter hook output priority 0; policy accept; }",
      `add rule inet lossy out meta l4proto { tcp, udp } numgen random mod 1000 < ${Math.round(LOSS * 10)} drop`
    ]
    for (const rule of rules)
      execFileSync("ip", ["netns", "exec", ns, "nft", ...rule.split(" ")], { stdio: "pipe" })
    await new Promise<void>((resolve, reject) => {
      const child = spawn(
        "ip",
        ["netns", "exec", ns, process.execPath, ...process.execArgv, ...process.argv.slice(1)],
        {
          stdio: ["ignore", "inherit", "inherit"],
          env: { ...process.env, HS2_LOSSY_INNER: "1" }
        }
      )
      child.on("exit", (code) => (code === 0 ? resolve() : reject(new Error(`inner run exited ${code}`))))
    })
  } finally {
    run("netns", "del", ns)
  }
}

;(process.env.HS2_LOSSY_INNER === "1" ? inner() : outer()).then(
  () => process.exit(0),
  (error: unknown) => {
    process.stderr.write(`lossy: ${error instanceof Error ? error.message : String(error)}\n`)
    process.exit(1)
  }
)
