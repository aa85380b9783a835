// Reliable delivery's overhead in bytes (issue 14), in simulated time: 4 validators (registry, peer
// manager over MemoryTransport, broadcaster) on one SimulatedNetwork under TestClock, every link
// LOSS_LATENCY_MS (10) one way, unlimited bandwidth. Each validator broadcasts LOSS_MESSAGES (1,000)
// 1 KiB AppMessages, LOSS_PER_STEP (10) per 10 ms step (1,000/s per origin), then the clock runs to a
// fixed window of LOSS_WINDOW_MS (6,000) from the first broadcast, and on until everything is
// acknowledged (at most 60 s). Scenarios, each on a fresh network with the same seed (the mesh forms
// without loss, then the loss is set on every link; the simulated loss model drops whole writes on a
// live connection, each write a batch of frames):
//   unreliable loss 0 | reliable loss 0 | reliable loss LOSS (0.05) | unreliable loss LOSS
// Per scenario: bytes on the wire in the window (SimulatedNetwork `stats`: delivered + lost, every
// unit: frames, heartbeats, acks), slot bytes the broadcasters queued (tapped at the peer manager:
// data slots sent first and sent again, acks on the heartbeat channel), retransmissions and acks
// (observer), deliveries, reconnections; and, to tell needed retransmissions from spurious ones, the
// duplicates receivers dropped, sends per (peer, sequence) (`sendsByCopy`: first, second, ... sixth
// or later copies) and `againEarly`, copies sent again sooner than retransmitAfterMin (100 ms) after
// the last (not the retransmission timer's: a resend of everything held).
// Ratios: reliable at LOSS against reliable at 0 (the retransmission overhead) and reliable at 0
// against unreliable at 0 (acks and the 25-byte reliable header: the cost with no loss at all).
// Exact for a seed, whatever the machine's load; LOSS_SEEDS (default 1,2,3) give the spread. JSON
// lines on stdout (a line per scenario, the ratios per seed, a summary of medians), progress on
// stderr. About 30 s of wall time per seed.
//
// Run from packages/broadcast: `npm run bench:reliable` (tsc -b bench, then node
// dist/bench/reliableLoss.js). Env: LOSS (0.05), LOSS_SEEDS, LOSS_MESSAGES, LOSS_PER_STEP,
// LOSS_LATENCY_MS, LOSS_WINDOW_MS, LOSS_ACK_DELAY_MS (the broadcast config's ackDelay, default 10).
import * as os from "node:os"
import { PeerManager, PeerRegistry } from "@hotstuff2/peers"
import { Bench } from "@hotstuff2/testing"
import { MemoryTransport, SimulatedNetwork, TransportConfig } from "@hotstuff2/transport"
import { type Identity, Message } from "@hotstuff2/wire"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Logger from "effect/Logger"
import * as LogLevel from "effect/LogLevel"
import * as Stream from "effect/Stream"
import * as TestClock from "effect/TestClock"
import * as TestContext from "effect/TestContext"
import { Broadcaster } from "../src/index.js"
import * as Payload from "../src/internal/payload.js"
import { addressOf, hostOf, key, NETWORK } from "../test/fixtures/cluster.js"

Bench.resultsOnStdout()

const numberOf = (name: string, fallback: number): number => {
  const n = Number(process.env[name])
  return process.env[name] !== undefined && Number.isFinite(n) && n >= 0 ? n : fallback
}
const LOSS = numberOf("LOSS", 0.05)
const SEEDS = (process.env.LOSS_SEEDS ?? "1,2,3").split(",").map(Number).filter(Number.isInteger)
const MESSAGES = numberOf("LOSS_MESSAGES", 1000)
const PER_STEP = Math.max(1, numberOf("LOSS_PER_STEP", 10))
const LATENCY_MS = numberOf("LOSS_LATENCY_MS", 10)
const WINDOW_MS = numberOf("LOSS_WINDOW_MS", 6000)
const ACK_DELAY_MS = numberOf("LOSS_ACK_DELAY_MS", 10)
const SIZE = 4
const PAYLOAD_BYTES = 1024
const STEP_MS = 10
const SETTLE_MAX_MS = 60_000
const HEARTBEAT = TransportConfig.Channel.heartbeat
/** The broadcast config's default retransmitAfterMin. */
const RTO_MIN_MS = 100

const log = (line: string) => process.stderr.write(`reliable-loss: ${line}\n`)
const emit = (record: Record<string, unknown>) => process.stdout.write(`${JSON.stringify(record)}\n`)
const loadavg = () => os.loadavg().map((l) => Bench.round(l, 2))

const payload = new Uint8Array(PAYLOAD_BYTES).fill(7)
const message = (origin: number) => Message.AppMessage.make({ topic: `o${origin}`, data: payload })

/** What one validator's broadcaster queued and saw. */
interface Tally {
  /** Reliable data slots (kind 0x07) queued: count and bytes, and those sent again. */
  reliableSlots: number
  reliableBytes: number
  againSlots: number
  againBytes: number
  /** Unreliable data slots queued (`send`, the direct broadcast's path): count and bytes. */
  plainSlots: number
  plainBytes: number
  /** Reliable slots by how many times their (peer, sequence) had been sent, that send included (index 1 to 5, 6+). */
  sends: Array<number>
  /** Sends again sooner than retransmitAfterMin after the previous send of the same (peer, sequence). */
  againEarly: number
  /** Observer: arrivals dropped (duplicate, stale, beyond-window). */
  droppedDuplicate: number
  /** Acks queued on the heartbeat channel. */
  ackSlots: number
  ackBytes: number
  /** Observer: retransmissions and acknowledgements. */
  retransmitted: number
  acked: number
  /** Deliveries, per origin, and those that carried `reliable`. */
  delivered: Map<Identity.PeerId, number>
  reliableDelivered: number
  /** Connections that came up after the mesh formed (each resends what is unacknowledged). */
  reconnects: number
}

const emptyTally = (): Tally => ({
  reliableSlots: 0,
  reliableBytes: 0,
  againSlots: 0,
  againBytes: 0,
  plainSlots: 0,
  plainBytes: 0,
  sends: [0, 0, 0, 0, 0, 0, 0],
  againEarly: 0,
  droppedDuplicate: 0,
  ackSlots: 0,
  ackBytes: 0,
  retransmitted: 0,
  acked: 0,
  delivered: new Map(),
  reliableDelivered: 0,
  reconnects: 0
})

interface Node {
  readonly id: Identity.Identity
  readonly broadcaster: Broadcaster.BroadcasterShape
  readonly manager: PeerManager.PeerManagerShape
  tally: Tally
  meshed: boolean
}

const bytesOf = (slots: ReadonlyArray<unknown>) =>
  slots.reduce<number>((n, s) => n + (s instanceof Uint8Array ? s.length : 0), 0)

/**
 * The peer manager, with every batch the broadcaster queues counted (both `send` and `unsafeSend`):
 * reliable slots by (peer, sequence), so that a sequence seen before is a send again.
 */
const counting = (tally: () => Tally) =>
  Layer.effect(
    PeerManager.PeerManager,
    Effect.gen(function* () {
      const inner = yield* PeerManager.PeerManager
      const clock = yield* Effect.clock
      const seen = new Map<Identity.PeerId, Map<bigint, { sends: number; at: number }>>()
      const count = (peer: Identity.PeerId, channel: number, slots: ReadonlyArray<unknown>) => {
        const t = tally()
        if (channel === HEARTBEAT) {
          t.ackSlots += slots.length
          t.ackBytes += bytesOf(slots)
          return
        }
        for (const slot of slots) {
          if (!(slot instanceof Uint8Array)) continue
          if (slot[0] !== Payload.RELIABLE) {
            t.plainSlots++
            t.plainBytes += slot.length
            continue
          }
          const sequence = Buffer.from(slot.buffer, slot.byteOffset, slot.length).readBigUInt64BE(9)
          let sequences = seen.get(peer)
          if (sequences === undefined) {
            sequences = new Map()
            seen.set(peer, sequences)
          }
          t.reliableSlots++
          t.reliableBytes += slot.length
          const at = clock.unsafeCurrentTimeMillis()
          const previous = sequences.get(sequence)
          const sends = (previous?.sends ?? 0) + 1
          sequences.set(sequence, { sends, at })
          t.sends[Math.min(sends, t.sends.length - 1)]!++
          if (previous !== undefined) {
            t.againSlots++
            t.againBytes += slot.length
            // Sooner than the shortest retransmission timeout: not the timer's (a resend of everything held).
            if (at - previous.at < RTO_MIN_MS) t.againEarly++
          }
        }
      }
      return {
        ...inner,
        send: (peer, channel, slots, options) =>
          Effect.tap(inner.send(peer, channel, slots, options), () => count(peer, channel, slots)),
        unsafeSend: (peer, channel, slots) => {
          const error = inner.unsafeSend(peer, channel, slots)
          if (error === undefined) count(peer, channel, slots)
          return error
        }
      } satisfies PeerManager.PeerManagerShape
    })
  )

const startNode = (id: Identity.Identity, all: ReadonlyArray<Identity.Identity>) =>
  Effect.gen(function* () {
    const self: { node?: Node } = {}
    const tally = () => self.node!.tally
    const peersConfig = { dialGrace: 0 }
    const layer = Broadcaster.Broadcaster.layer({
      identity: id,
      networkId: NETWORK,
      validators: all.map((m) => m.peerId),
      config: { ackDelay: ACK_DELAY_MS },
      observer: {
        retransmitted: (_peer, n) => {
          tally().retransmitted += n
        },
        acked: (_peer, n) => {
          tally().acked += n
        },
        reliableDropped: (_peer, why) => {
          if (why === "duplicate") tally().droppedDuplicate++
        }
      }
    }).pipe(
      Layer.provideMerge(
        Layer.provide(
          counting(tally),
          PeerManager.PeerManager.layer({
            identity: id,
            listen: addressOf(id),
            validators: all.map((m) => ({ id: m.peerId, addresses: [addressOf(m)] })),
            config: peersConfig
          })
        )
      ),
      Layer.provideMerge(MemoryTransport.layer({ identity: id, config: { networkId: NETWORK } })),
      Layer.provideMerge(PeerRegistry.PeerRegistry.layer(peersConfig))
    )
    const context = yield* Layer.build(layer)
    const node: Node = {
      id,
      broadcaster: Context.get(context, Broadcaster.Broadcaster),
      manager: Context.get(context, PeerManager.PeerManager),
      tally: emptyTally(),
      meshed: false
    }
    self.node = node
    yield* Effect.forkScoped(
      Stream.runForEach(node.broadcaster.inbound, (d) =>
        Effect.sync(() => {
          node.tally.delivered.set(d.origin, (node.tally.delivered.get(d.origin) ?? 0) + 1)
          if (d.reliable !== undefined) node.tally.reliableDelivered++
        })
      )
    )
    const registry = Context.get(context, PeerRegistry.PeerRegistry)
    yield* Effect.forkScoped(
      Stream.runForEach(registry.changes, (event) =>
        Effect.sync(() => {
          if (event._tag === "Connected" && node.meshed) node.tally.reconnects++
        })
      )
    )
    return node
  })

type Mode = "reliable" | "unreliable"

const scenario = (seed: number, mode: Mode, loss: number) =>
  Effect.gen(function* () {
    const wallStarted = performance.now()
    const network = yield* SimulatedNetwork.SimulatedNetwork
    const ids = Array.from({ length: SIZE }, (_, i) => key(i + 1))
    const nodes: Array<Node> = []
    for (const id of ids) nodes.push(yield* startNode(id, ids))
    // Mesh without loss (handshakes are not what is measured), then loss on every link.
    for (let i = 0; ; i++) {
      const connected = yield* Effect.forEach(nodes, (n) => n.manager.connected)
      if (connected.every((c) => c.length >= SIZE - 1)) break
      if (i > 600) throw new Error("the mesh did not form")
      yield* TestClock.adjust(100)
    }
    for (const node of nodes) node.meshed = true
    for (const a of ids)
      for (const b of ids) if (a !== b) yield* network.setLink(hostOf(a), hostOf(b), { loss })
    // One second of heartbeats (RTTs) before the broadcasts.
    for (let t = 0; t < 1000; t += 100) yield* TestClock.adjust(100)
    for (const node of nodes) node.tally = { ...emptyTally(), reconnects: node.tally.reconnects }
    const before = yield* network.stats
    const reliable = mode === "reliable"
    let elapsed = 0
    for (let sent = 0; sent < MESSAGES; ) {
      for (let k = 0; k < PER_STEP && sent < MESSAGES; k++, sent++) {
        for (const [o, node] of nodes.entries()) {
          const receipt = yield* node.broadcaster.broadcast(message(o), { reliable })
          if (receipt.failed.length > 0) {
            return yield* Effect.fail(new Error(`broadcast from ${o}: ${receipt.failed[0]!.error._tag}`))
          }
        }
      }
      yield* TestClock.adjust(STEP_MS)
      elapsed += STEP_MS
    }
    const settled = () =>
      Effect.map(
        Effect.forEach(nodes, (n) => n.broadcaster.reliableBuffer),
        (held) => held.every((h) => h.messages === 0)
      )
    let settledAtMs: number | undefined
    while (elapsed < WINDOW_MS) {
      if (settledAtMs === undefined && (yield* settled())) settledAtMs = elapsed
      yield* TestClock.adjust(STEP_MS)
      elapsed += STEP_MS
    }
    const window = yield* network.stats
    while (settledAtMs === undefined && elapsed < SETTLE_MAX_MS) {
      if (yield* settled()) settledAtMs = elapsed
      else {
        yield* TestClock.adjust(100)
        elapsed += 100
      }
    }
    const sum = (f: (t: Tally) => number) => nodes.reduce((n, node) => n + f(node.tally), 0)
    const expected = MESSAGES * SIZE * (SIZE - 1)
    const delivered = sum((t) => [...t.delivered.values()].reduce((a, b) => a + b, 0))
    const wireBytes = window.deliveredBytes + window.lostBytes - (before.deliveredBytes + before.lostBytes)
    const dataFirstBytes = sum((t) => t.plainBytes + t.reliableBytes - t.againBytes)
    return {
      seed,
      mode,
      loss,
      wireBytes,
      wireWrites: window.deliveredWrites + window.lostWrites - (before.deliveredWrites + before.lostWrites),
      lostWrites: window.lostWrites - before.lostWrites,
      dataFirstBytes,
      dataFirstSlots: sum((t) => t.plainSlots + t.reliableSlots - t.againSlots),
      againBytes: sum((t) => t.againBytes),
      againSlots: sum((t) => t.againSlots),
      retransmitted: sum((t) => t.retransmitted),
      againEarly: sum((t) => t.againEarly),
      sendsByCopy: [1, 2, 3, 4, 5, 6].map((i) => sum((t) => t.sends[i]!)),
      duplicatesDropped: sum((t) => t.droppedDuplicate),
      ackSlots: sum((t) => t.ackSlots),
      ackBytes: sum((t) => t.ackBytes),
      acked: sum((t) => t.acked),
      delivered,
      deliveredShare: Bench.round(delivered / expected, 4),
      reliableDelivered: sum((t) => t.reliableDelivered),
      reconnects: sum((t) => t.reconnects),
      settledAtMs: reliable ? (settledAtMs ?? null) : null,
      wallMs: Math.round(performance.now() - wallStarted)
    }
  }).pipe(
    Effect.scoped,
    Effect.provide(SimulatedNetwork.SimulatedNetwork.layer({ seed, defaults: { latency: LATENCY_MS } }))
  )

type Result = Effect.Effect.Success<ReturnType<typeof scenario>>

const pct = (a: number, b: number) => Bench.round((100 * (a - b)) / b, 2)

const program = Effect.gen(function* () {
  const common = {
    bench: "reliable-loss",
    validators: SIZE,
    messagesPerOrigin: MESSAGES,
    payloadBytes: PAYLOAD_BYTES,
    perOriginPerSecond: (PER_STEP * 1000) / STEP_MS,
    latencyMs: LATENCY_MS,
    windowMs: WINDOW_MS,
    ackDelayMs: ACK_DELAY_MS
  }
  log(`${JSON.stringify(Bench.machine())} load ${loadavg().join(" ")}; ${JSON.stringify(common)}`)
  const started = performance.now()
  const all: Array<{ unreliable0: Result; reliable0: Result; reliableLoss: Result; unreliableLoss: Result }> =
    []
  for (const seed of SEEDS) {
    const unreliable0 = yield* scenario(seed, "unreliable", 0)
    const reliable0 = yield* scenario(seed, "reliable", 0)
    const reliableLoss = yield* scenario(seed, "reliable", LOSS)
    const unreliableLoss = yield* scenario(seed, "unreliable", LOSS)
    for (const r of [unreliable0, reliable0, reliableLoss, unreliableLoss]) {
      emit({ ...common, case: `${r.mode} loss ${r.loss}`, ...r })
    }
    const ratios = {
      seed,
      // Under loss: what the retransmissions add to reliable's own bytes without loss.
      retransmissionOverheadWirePct: pct(reliableLoss.wireBytes, reliable0.wireBytes),
      retransmissionOverheadDataPct: Bench.round(
        (100 * reliableLoss.againBytes) / reliableLoss.dataFirstBytes,
        2
      ),
      retransmittedPerMessage: Bench.round(reliableLoss.retransmitted / reliableLoss.dataFirstSlots, 4),
      // Without loss: acks and the reliable header against the same broadcasts unreliable.
      ackOverheadWirePct: pct(reliable0.wireBytes, unreliable0.wireBytes),
      ackBytesPctOfData0: Bench.round((100 * reliable0.ackBytes) / reliable0.dataFirstBytes, 2),
      ackBytesPctOfDataLoss: Bench.round((100 * reliableLoss.ackBytes) / reliableLoss.dataFirstBytes, 2),
      headerOverheadPct: pct(reliable0.dataFirstBytes, unreliable0.dataFirstBytes),
      // Reliable under loss against unreliable without loss: everything reliable costs at LOSS.
      totalOverheadWirePct: pct(reliableLoss.wireBytes, unreliable0.wireBytes),
      unreliableDeliveredShareAtLoss: unreliableLoss.deliveredShare,
      reliableDeliveredShareAtLoss: reliableLoss.deliveredShare
    }
    emit({ ...common, case: "ratios", loss: LOSS, ...ratios })
    log(`seed ${seed}: ${JSON.stringify(ratios)}; ${Math.round(performance.now() - started)} ms wall`)
    all.push({ unreliable0, reliable0, reliableLoss, unreliableLoss })
  }
  const med = (f: (x: (typeof all)[number]) => number) => Bench.round(Bench.median(all.map(f)), 2)
  emit({
    ...common,
    case: "summary",
    loss: LOSS,
    seeds: SEEDS,
    medians: {
      retransmissionOverheadWirePct: med((x) => pct(x.reliableLoss.wireBytes, x.reliable0.wireBytes)),
      retransmissionOverheadDataPct: med(
        (x) => (100 * x.reliableLoss.againBytes) / x.reliableLoss.dataFirstBytes
      ),
      retransmittedPerMessage: med((x) => x.reliableLoss.retransmitted / x.reliableLoss.dataFirstSlots),
      ackOverheadWirePct: med((x) => pct(x.reliable0.wireBytes, x.unreliable0.wireBytes)),
      ackBytesPctOfData0: med((x) => (100 * x.reliable0.ackBytes) / x.reliable0.dataFirstBytes),
      ackBytesPctOfDataLoss: med((x) => (100 * x.reliableLoss.ackBytes) / x.reliableLoss.dataFirstBytes),
      headerOverheadPct: med((x) => pct(x.reliable0.dataFirstBytes, x.unreliable0.dataFirstBytes)),
      totalOverheadWirePct: med((x) => pct(x.reliableLoss.wireBytes, x.unreliable0.wireBytes)),
      reliableSettledAtMsLoss: med((x) => x.reliableLoss.settledAtMs ?? Number.NaN),
      reliableSettledAtMs0: med((x) => x.reliable0.settledAtMs ?? Number.NaN),
      reconnectsLoss: med((x) => x.reliableLoss.reconnects),
      unreliableDeliveredShareAtLoss: med((x) => x.unreliableLoss.deliveredShare),
      reliableDeliveredShareAtLoss: med((x) => x.reliableLoss.deliveredShare)
    },
    wallMs: Math.round(performance.now() - started),
    loadavg: loadavg(),
    ...Bench.machine()
  })
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
