// Reliable delivery between in-process nodes over real TLS on 127.0.0.1, through the public API: a
// slow application (slow is not dead, the sender's buffer holds and is bounded), a cut link
// (exactly once, in order, across the reconnect), a restarted receiver (nothing lost, a small
// tail again). Real time throughout, about 35 s in all: for CI's main pass, not its Node 26 rerun
// (.ci/run leaves slow real-time suites out of that one).
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { assert, describe, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Fiber from "effect/Fiber"
import { NodeNetwork } from "../src/index.js"
import { reservePorts } from "../src/internal/ports.js"
import { configFor } from "./fixtures/cluster.js"
import { get } from "./fixtures/http.js"
import { relay } from "./fixtures/relay.js"
import {
  isConnected,
  notExactly,
  numbered,
  numbersFrom,
  type ReadingNode,
  startReading
} from "./fixtures/reliable.js"
import { Metrics } from "./fixtures/validatorProcesses.js"
import { waitLive } from "./fixtures/wait.js"

type ReliableBufferFull = Extract<NodeNetwork.SendError, { readonly _tag: "ReliableBufferFull" }>

const TOPIC = "a"

/** Each reliable message to one receiver is one step of its stream: sequence = number + 1, one incarnation. */
const checkStream = (delivered: ReadonlyArray<NodeNetwork.Inbound>, origin: NodeNetwork.PeerId) => {
  const fromOrigin = delivered.filter((d) => d.origin === origin)
  const incarnations = new Set(fromOrigin.map((d) => d.reliable?.incarnation))
  assert.strictEqual(
    incarnations.size,
    1,
    `one incarnation of the sender, saw ${[...incarnations].join(", ")}`
  )
  assert.isDefined([...incarnations][0], "every delivery carries its place in the reliable stream")
  const numbers = numbersFrom(fromOrigin, origin, TOPIC)
  const mismatch = fromOrigin.findIndex((d, i) => d.reliable?.sequence !== BigInt(numbers[i]! + 1))
  assert.strictEqual(mismatch, -1, `delivery ${mismatch} is not the stream's sequence number + 1`)
}

/**
 * Sends `count` numbered reliable messages from `from` to `to`, 10 every 10 ms (about 1,000 a
 * second), and counts them in `progress.sent`. A full reliable buffer is waited out (10 ms, then the
 * same message again) and each refusal kept in `progress.full`; any other failure ends the fiber.
 */
const sendNumbered = (
  from: ReadingNode,
  to: NodeNetwork.PeerId,
  count: number,
  progress: { sent: number; readonly full: Array<ReliableBufferFull> },
  bytes = 4
) =>
  Effect.gen(function* () {
    for (let i = 0; i < count; i++) {
      for (;;) {
        const sent = yield* Effect.either(from.net.send(to, numbered(TOPIC, i, bytes), { reliable: true }))
        if (Either.isRight(sent)) break
        if (sent.left._tag !== "ReliableBufferFull") return yield* Effect.fail(sent.left)
        progress.full.push(sent.left)
        yield* Effect.sleep("10 millis")
      }
      progress.sent = i + 1
      if (progress.sent % 10 === 0) yield* Effect.sleep("10 millis")
    }
  })

const scrape = (address: string) =>
  Effect.flatMap(get(address, "/metrics"), (response) =>
    response.status === 200
      ? Effect.succeed(Metrics.parse(response.body))
      : Effect.fail(new Error(`GET /metrics: ${response.status}`))
  )

const tempDirectory = (prefix: string) =>
  Effect.acquireRelease(
    Effect.sync(() => fs.mkdtempSync(path.join(os.tmpdir(), prefix))),
    (directory) => Effect.sync(() => fs.rmSync(directory, { recursive: true, force: true }))
  )

const stopAll = (nodes: ReadonlyArray<() => ReadingNode | undefined>) =>
  Effect.addFinalizer(() =>
    Effect.forEach(nodes, (node) => node()?.stop ?? Effect.void, { concurrency: "unbounded", discard: true })
  )

describe("reliable delivery over TLS", () => {
  /**
   * B's application stops reading for 10 s while A sends B about 1,000 reliable messages a second.
   * B's inbox is kept small, so its reader and then its socket pause within milliseconds: B hears
   * nothing from A for 9 s and more (18 heartbeat intervals; 3 unanswered end a dead link), yet
   * neither side disconnects, since B keeps pinging A. A's buffer for B (maxUnackedPerPeer
   * 2,048) fills: its sends are refused with ReliableBufferFull, and its Prometheus gauge reads
   * exactly the bound, never more. Once B reads again, every message arrives once in A's order, and
   * A's buffer empties.
   */
  it.scopedLive(
    "a receiver that stops reading for 10 s stays connected, the sender holds at most its configured buffer, and everything arrives once in order",
    () =>
      Effect.gen(function* () {
        const TOTAL = 8_000
        const MAX_UNACKED = 2_048
        const STALL_MILLIS = 10_000
        const ports = yield* reservePorts(3)
        const addresses = ports.slice(0, 2).map((p) => `127.0.0.1:${p}`)
        const metricsAddress = `127.0.0.1:${ports[2]}`
        let a: ReadingNode | undefined
        let b: ReadingNode | undefined
        yield* stopAll([() => a, () => b])
        a = yield* startReading(
          NodeNetwork.layer(
            configFor(0, addresses, {
              telemetry: { prometheus: metricsAddress, metricsInterval: 100 },
              broadcast: { maxUnackedPerPeer: MAX_UNACKED }
            })
          )
        )
        b = yield* startReading(
          NodeNetwork.layer(
            configFor(1, addresses, {
              // A small inbox: B's reader, then its socket, waits soon after its application stops.
              peers: { heartbeatInterval: 500, inboundFramesPerPeer: 8, inboundBytesPerPeer: 32 * 1024 }
            })
          )
        )
        const [A, B] = [a, b]
        yield* waitLive(
          "A and B connected both ways",
          Effect.zipWith(isConnected(A.net, B.net.self), isConnected(B.net, A.net.self), (x, y) => x && y)
        )
        const progress = { sent: 0, full: [] as Array<ReliableBufferFull> }
        const sender = yield* Effect.fork(sendNumbered(A, B.net.self, TOTAL, progress, 256))

        yield* waitLive(
          "B to read 1,000 messages",
          Effect.sync(() => B.delivered.length >= 1_000)
        )
        yield* B.pause
        const readAtPause = B.delivered.length
        // Real time: the point is what 10 s of a silent, non-reading peer does to the link.
        const shortA = A.net.self.slice(0, 8)
        const held = { entries: 0, messages: 0, samples: 0 }
        const lastSeenOfA = Effect.map(B.net.peers, (ps) => ps.find((p) => p.id === A.net.self)?.lastSeen)
        let seenEarly: number | undefined
        const stallStarted = Date.now()
        const stallEnds = stallStarted + STALL_MILLIS
        // 10 s, and (on a slow machine, where A sends more slowly) until A's buffer has been full for
        // a few scrapes: the bound is what is being checked. The outer deadline guards a hang only.
        let scrapesSinceFull = 0
        while (Date.now() < stallEnds || scrapesSinceFull < 5) {
          if (Date.now() > stallStarted + 45_000) {
            return yield* Effect.fail(new Error(`A's buffer for B never filled: ${progress.sent} sent`))
          }
          if (progress.full.length > 0) scrapesSinceFull++
          // A second in, B's reader waits on its full inbox: from then on B reads nothing from A.
          if (seenEarly === undefined && Date.now() - stallStarted >= 1_000) seenEarly = yield* lastSeenOfA
          const metrics = yield* Effect.option(scrape(metricsAddress))
          if (metrics._tag === "Some") {
            held.samples++
            held.entries = Math.max(
              held.entries,
              metrics.value.sum("hotstuff2_reliable_buffer_entries", { node: shortA })
            )
            held.messages = Math.max(
              held.messages,
              metrics.value.sum("hotstuff2_reliable_buffer_messages", { node: shortA })
            )
          }
          yield* Effect.sleep("200 millis")
        }
        const seenLate = yield* lastSeenOfA
        const refusedDuringStall = progress.full.length
        const sentDuringStall = progress.sent
        const readDuringStall = B.delivered.length
        yield* B.resume

        yield* waitLive(
          `B to read all ${TOTAL} messages`,
          Effect.sync(() => B.delivered.length >= TOTAL),
          { within: "40 seconds" }
        )
        yield* Fiber.join(sender)
        yield* waitLive(
          "A's reliable buffer to empty (its gauge at 0)",
          Effect.map(
            Effect.option(scrape(metricsAddress)),
            (m) =>
              m._tag === "Some" && m.value.sum("hotstuff2_reliable_buffer_entries", { node: shortA }) === 0
          ),
          { within: "10 seconds" }
        )
        // A paused peer is probed, not flooded: while it said nothing, A sent at most one blind
        // copy per timeout, not its whole held buffer again each time (which came to about 13,000
        // copies of 2,048 held messages before probes).
        const final = yield* scrape(metricsAddress)
        const retransmitted = final.sum("hotstuff2_reliable_retransmissions_total", { node: shortA })
        assert.strictEqual(
          final.sum("hotstuff2_reliable_acked_total", { node: shortA }),
          TOTAL,
          "every one acked"
        )
        assert.isBelow(retransmitted, MAX_UNACKED, `A retransmitted ${retransmitted} copies`)

        // B really stopped reading: nothing reached its application during the stall.
        assert.strictEqual(readDuringStall, readAtPause, "B's application read nothing while paused")
        // B heard nothing at all from A for 9 s, 18 heartbeat intervals (3 unanswered end a dead link).
        assert.isDefined(seenEarly)
        assert.strictEqual(seenLate, seenEarly, "B read nothing from A's connection during the stall")
        // Slow is not dead: neither side took the other for gone.
        const disconnects = [
          ...A.events.filter((e) => e._tag === "Disconnected" && e.peer === B.net.self),
          ...B.events.filter((e) => e._tag === "Disconnected" && e.peer === A.net.self)
        ]
        assert.deepStrictEqual(disconnects, [], "no Disconnected event between A and B")
        assert.isTrue(yield* isConnected(A.net, B.net.self), "A still has B connected")
        // The sender's memory stayed within the configured buffer, and reached it.
        assert.isAbove(held.samples, 10, "A's metrics were scraped during the stall")
        assert.strictEqual(held.entries, MAX_UNACKED, "A's buffer for B peaked at exactly maxUnackedPerPeer")
        assert.strictEqual(held.messages, MAX_UNACKED, "one recipient: distinct messages = entries")
        assert.isAbove(refusedDuringStall, 0, "A's sends were refused once its buffer for B was full")
        assert.isBelow(sentDuringStall, TOTAL, "A was held back, not finished, when B resumed")
        for (const refusal of progress.full) {
          assert.deepInclude(refusal, {
            scope: "peer",
            peer: B.net.self,
            limit: "messages",
            max: MAX_UNACKED
          })
        }
        // Everything arrived, once, in A's order, each at its place in A's stream to B.
        const numbers = numbersFrom(B.delivered, A.net.self, TOPIC)
        assert.isUndefined(notExactly(numbers, 0, TOTAL - 1))
        assert.strictEqual(B.delivered.length, TOTAL, "nothing else was delivered")
        checkStream(B.delivered, A.net.self)
      }),
    90_000
  )

  /**
   * A sends B a steady stream while the link between them is cut (every connection reset, new ones
   * refused) for 2 s: A's reliable messages wait in its buffer, go out again when the nodes
   * reconnect, and B, which kept running, delivers each once, in order, across the reconnect.
   */
  it.scopedLive(
    "a link cut for 2 s mid-stream: every message sent meanwhile arrives once, in order, after the reconnect",
    () =>
      Effect.gen(function* () {
        const TOTAL = 5_000
        const ports = yield* reservePorts(4)
        const listens = ports.slice(0, 2).map((p) => `127.0.0.1:${p}`)
        const relays = [yield* relay(ports[2]!, listens[0]!), yield* relay(ports[3]!, listens[1]!)] as const
        // Each node is known (config and its own record) by its relay's address: every connection
        // between them, whoever dials, goes through one of the relays.
        const dialled = relays.map((r) => r.address)
        const config = (n: number) =>
          configFor(n, dialled, {
            listen: listens[n]!,
            discovery: { advertise: [dialled[n]!] },
            peers: { heartbeatInterval: 500, redialCap: 500 }
          })
        let a: ReadingNode | undefined
        let b: ReadingNode | undefined
        yield* stopAll([() => a, () => b])
        a = yield* startReading(NodeNetwork.layer(config(0)))
        b = yield* startReading(NodeNetwork.layer(config(1)))
        const [A, B] = [a, b]
        yield* waitLive(
          "A and B connected both ways",
          Effect.zipWith(isConnected(A.net, B.net.self), isConnected(B.net, A.net.self), (x, y) => x && y)
        )
        const progress = { sent: 0, full: [] as Array<ReliableBufferFull> }
        const sender = yield* Effect.fork(sendNumbered(A, B.net.self, TOTAL, progress))

        yield* waitLive(
          "B to read 1,000 messages",
          Effect.sync(() => B.delivered.length >= 1_000)
        )
        const disconnectsBefore = A.events.filter((e) => e._tag === "Disconnected").length
        yield* Effect.forEach(relays, (r) => r.cut, { discard: true })
        const sentAtCut = progress.sent
        yield* waitLive(
          "A to see B disconnected",
          Effect.sync(() => A.events.filter((e) => e._tag === "Disconnected").length > disconnectsBefore)
        )
        yield* Effect.sleep("2 seconds")
        const connectsBefore = A.events.filter((e) => e._tag === "Connected" && e.peer === B.net.self).length
        yield* Effect.forEach(relays, (r) => r.restore, { discard: true })
        yield* waitLive(
          "A to see B connected again",
          Effect.sync(
            () =>
              A.events.filter((e) => e._tag === "Connected" && e.peer === B.net.self).length > connectsBefore
          )
        )
        const sentAtReconnect = progress.sent

        yield* waitLive(
          `B to read all ${TOTAL} messages`,
          Effect.sync(() => B.delivered.length >= TOTAL),
          { within: "40 seconds" }
        )
        yield* Fiber.join(sender)

        assert.isAtLeast(
          sentAtReconnect - sentAtCut,
          200,
          "A sent a good part of the stream while the link was down"
        )
        assert.isBelow(sentAtReconnect, TOTAL, "the stream went on after the reconnect")
        assert.deepStrictEqual(progress.full, [], "A's buffer never filled")
        const numbers = numbersFrom(B.delivered, A.net.self, TOPIC)
        assert.isUndefined(notExactly(numbers, 0, TOTAL - 1))
        assert.strictEqual(B.delivered.length, TOTAL, "nothing else was delivered")
        checkStream(B.delivered, A.net.self)
      }),
    60_000
  )

  /**
   * B closes mid-stream and starts again (same key, same data directory, same port) while A keeps
   * sending. The new B has no stream state: A's retransmissions carry their floor (A's lowest
   * unacknowledged sequence) and B starts there. So everything A sent while B was down arrives once,
   * in order, in B's second run; nothing is missing between the runs; and the second run repeats
   * only the few messages the first delivered but had not acknowledged yet (a small tail).
   */
  it.scopedLive(
    "a receiver restarted mid-stream: nothing is lost, each run delivers once in order, and only a small tail comes twice",
    () =>
      Effect.gen(function* () {
        const TOTAL = 5_000
        const ports = yield* reservePorts(2)
        const addresses = ports.map((p) => `127.0.0.1:${p}`)
        const directory = yield* tempDirectory("hotstuff2-reliable-")
        const config = (n: number) =>
          configFor(n, addresses, {
            dataDirectory: path.join(directory, `node-${n}`),
            peers: { heartbeatInterval: 500, redialCap: 500 }
          })
        let a: ReadingNode | undefined
        let b: ReadingNode | undefined
        yield* stopAll([() => a, () => b])
        a = yield* startReading(NodeNetwork.layer(config(0)))
        b = yield* startReading(NodeNetwork.layer(config(1)))
        const A = a
        const firstB = b
        yield* waitLive(
          "A and B connected both ways",
          Effect.zipWith(
            isConnected(A.net, firstB.net.self),
            isConnected(firstB.net, A.net.self),
            (x, y) => x && y
          )
        )
        const progress = { sent: 0, full: [] as Array<ReliableBufferFull> }
        const sender = yield* Effect.fork(sendNumbered(A, firstB.net.self, TOTAL, progress))

        yield* waitLive(
          "B to read 1,000 messages",
          Effect.sync(() => firstB.delivered.length >= 1_000)
        )
        yield* firstB.stop
        b = undefined
        const sentAtStop = progress.sent
        yield* Effect.sleep("1500 millis")
        const sentAtRestart = progress.sent
        b = yield* startReading(NodeNetwork.layer(config(1)))
        const secondB = b

        yield* waitLive(
          `B's second run to read up to message ${TOTAL - 1}`,
          Effect.sync(() => numbersFrom(secondB.delivered, A.net.self, TOPIC).at(-1) === TOTAL - 1),
          { within: "40 seconds" }
        )
        yield* Fiber.join(sender)

        const first = numbersFrom(firstB.delivered, A.net.self, TOPIC)
        const second = numbersFrom(secondB.delivered, A.net.self, TOPIC)
        assert.isAtLeast(sentAtRestart - sentAtStop, 200, "A sent a good part of the stream while B was down")
        // Each run delivered once, in order, with nothing missing inside it.
        assert.isUndefined(notExactly(first, 0, first.length - 1), "B's first run: 0, 1, ... once each")
        const from = second[0] ?? TOTAL
        assert.isUndefined(
          notExactly(second, from, TOTAL - 1),
          "B's second run: from its first number on, once each"
        )
        // Nothing lost between the runs, and the repeats are a small tail of the first run.
        const last = first.at(-1) ?? -1
        assert.isAtMost(
          from,
          last + 1,
          `the second run starts at ${from}, past the first run's last (${last})`
        )
        assert.isBelow(last + 1 - from, 200, `the second run repeats ${last + 1 - from} of the first`)
        assert.isAtMost(from, sentAtStop, "what A sent while B was down came in the second run")
        checkStream(secondB.delivered, A.net.self)
        checkStream(firstB.delivered, A.net.self)
        assert.strictEqual(
          firstB.delivered[0]?.reliable?.incarnation,
          secondB.delivered[0]?.reliable?.incarnation,
          "A's one incarnation in both runs"
        )
      }),
    60_000
  )
})
