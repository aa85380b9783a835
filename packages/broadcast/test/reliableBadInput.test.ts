// Bad input to reliable delivery, and its limits, on the simulated network under TestClock. Bad acks
// and reliable slots come from "mallory": a validator whose node is not running but which holds a
// raw, authenticated connection to node 0 (it reads what node 0 sends it, acks included, and never
// acknowledges anything itself unless told to). Each bad input is refused with its reason, counted
// and charged, or dropped and counted, and nothing else is lost.
import { assert, describe, it } from "@effect/vitest"
import type { PeerRegistry } from "@hotstuff2/peers"
import { SimulatedNetwork, type Transport, TransportConfig } from "@hotstuff2/transport"
import { Codec, Envelope, type Identity, Message } from "@hotstuff2/wire"
import * as Cause from "effect/Cause"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Option from "effect/Option"
import * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import * as TestClock from "effect/TestClock"
import { Broadcaster } from "../src/index.js"
import * as Payload from "../src/internal/payload.js"
import {
  advance,
  awaitMesh,
  type ClusterOptions,
  hostOf,
  key,
  NETWORK,
  type Node,
  onNetwork,
  rawConnection,
  scoreOf,
  startCluster
} from "./fixtures/cluster.js"

type PeerId = Identity.PeerId
const { Channel } = TransportConfig

const app = (n: number) => Message.AppMessage.make({ topic: "r", data: new TextEncoder().encode(String(n)) })
const numberOf = (message: Message.Message): number =>
  message._tag === "AppMessage" ? Number(new TextDecoder().decode(message.data)) : Number.NaN
const range = (from: number, to: number) => Array.from({ length: to - from }, (_, i) => from + i)

/** The numbers of the app messages `node` delivered from `origin`, in order. */
const numbersFrom = (node: Node, origin: PeerId): Array<number> =>
  node.delivered
    .filter((d) => d.origin === origin && d.message._tag === "AppMessage")
    .map((d) => numberOf(d.message))

const encodeAck = (ack: {
  incarnation: bigint
  cumulative: bigint
  ranges?: ReadonlyArray<[bigint, bigint]>
}) =>
  Either.getOrThrow(
    Codec.encode(
      Message.Ack.make({
        incarnation: ack.incarnation,
        cumulative: ack.cumulative,
        ranges: (ack.ranges ?? []).map(([first, last]) => ({ first, last }))
      })
    )
  )

/** A bare app message as the slot a reliable slot carries. */
const bare = (n: number) => Either.getOrThrow(Codec.encodeAfter(Payload.directPrefix(undefined), app(n)))

/** A reliable slot carrying app message `n` bare: from its sender, whoever that is. */
const reliableApp = (incarnation: bigint, sequence: bigint, n: number, floor = 1n) =>
  Payload.reliable(incarnation, sequence, floor, bare(n))

/** What each node's observer saw of reliable delivery. */
interface Seen {
  readonly ackRefused: Array<readonly [PeerId, string]>
  readonly dropped: Array<readonly [PeerId, string]>
  readonly skipped: Array<readonly [PeerId, number, string]>
  readonly acked: Array<readonly [PeerId, number]>
  readonly retransmitted: Map<PeerId, number>
}

/** Observer hooks for the cluster (`observer` option), and what they saw per node. */
const watch = () => {
  const seen = new Map<PeerId, Seen>()
  const observer = (self: PeerId): Broadcaster.Observer => {
    const mine: Seen = { ackRefused: [], dropped: [], skipped: [], acked: [], retransmitted: new Map() }
    seen.set(self, mine)
    return {
      ackRefused: (peer, reason) => void mine.ackRefused.push([peer, reason]),
      reliableDropped: (peer, why) => void mine.dropped.push([peer, why]),
      gapSkipped: (origin, count, why) => void mine.skipped.push([origin, count, why]),
      acked: (peer, count) => void mine.acked.push([peer, count]),
      retransmitted: (peer, count) => {
        mine.retransmitted.set(peer, (mine.retransmitted.get(peer) ?? 0) + count)
      }
    }
  }
  return { observer, of: (node: Node) => seen.get(node.id.peerId)! }
}

type ScoreChanged = Extract<PeerRegistry.PeerEvent, { readonly _tag: "ScoreChanged" }>

/** Collects the `ScoreChanged` events of `node`'s registry from now on (subscribed before it returns). */
const scoreChanges = (node: Node) =>
  Effect.gen(function* () {
    const events: Array<ScoreChanged> = []
    yield* Effect.forkScoped(
      Stream.runForEach(node.registry.changes, (event) =>
        Effect.sync(() => {
          if (event._tag === "ScoreChanged") events.push(event)
        })
      )
    )
    yield* TestClock.adjust(1)
    return events
  })

/** How a waiting fiber failed, once the scheduler has run it (without waiting for it: under TestClock it would hang). */
const failureOf = <A, E>(fiber: Fiber.Fiber<A, E>) =>
  Effect.gen(function* () {
    yield* Effect.yieldNow()
    const exit = Option.getOrThrowWith(yield* Fiber.poll(fiber), () => new Error("still waiting"))
    const failure = Exit.isFailure(exit) ? Cause.failureOption(exit.cause) : Option.none()
    return Option.getOrThrowWith(failure, () => new Error("it did not fail"))
  })

/** The acks among `frames` (heartbeat channel), in order. */
const acksIn = (frames: ReadonlyArray<Transport.InboundFrame>): Array<Message.Ack> =>
  frames
    .filter((f) => f.channel === Channel.heartbeat)
    .flatMap((f) => f.messages.map((m) => Either.getOrThrow(Codec.decode(m))))
    .filter((m): m is Message.Ack => m._tag === "Ack")

/** The reliable headers among `slots` (anything else is skipped). */
const reliableHeaders = (slots: ReadonlyArray<unknown>): Array<Payload.ReliableHeader> =>
  slots.flatMap((slot) => {
    if (!(slot instanceof Uint8Array) || slot[0] !== Payload.RELIABLE) return []
    const header = Payload.parseReliable(slot.subarray(1))
    return typeof header === "string" ? [] : [header]
  })

/**
 * Closing does not wait for acknowledgements: under TestClock the wait would last until the clock
 * moves, and a failed assertion would show up as a timeout. (Each test ends with nothing held.)
 */
const quickClose = { drainTimeout: 0 }

/** Peers settings that never ban within a test (so every refusal can be counted) and never ping. */
const lenient = { heartbeatInterval: "1 hour", maxScore: 10_000, banThreshold: -10_000 }

/** Four running validators and mallory (the fifth, not running) connected to node 0. */
const withMallory = (options: Omit<ClusterOptions, "size" | "absent"> = {}) =>
  Effect.gen(function* () {
    const seen = watch()
    const { ids, nodes } = yield* startCluster({
      peers: lenient,
      ...options,
      broadcast: { ...quickClose, ...options.broadcast },
      size: 5,
      absent: new Set([4]),
      observer: seen.observer
    })
    const live = nodes.filter((n): n is Node => n !== undefined)
    yield* awaitMesh(live)
    const mallory = ids[4]!
    const raw = yield* rawConnection(mallory, ids[0]!)
    yield* advance(50)
    return { ids, nodes: live, mallory, raw, seen: seen.of, events: yield* scoreChanges(live[0]!) }
  })

/** A running cluster of `size` with its observers' counts. */
const cluster = (options: ClusterOptions) =>
  Effect.gen(function* () {
    const seen = watch()
    const { ids, nodes } = yield* startCluster({
      ...options,
      broadcast: { ...quickClose, ...options.broadcast },
      observer: seen.observer
    })
    const live = nodes as ReadonlyArray<Node>
    yield* awaitMesh(live)
    return { ids, nodes: live, seen: seen.of }
  })

describe("reliable delivery: bad acknowledgements", () => {
  it.scoped(
    "acks for a stream never opened, for sequences never sent, or with malformed ranges are refused, counted and charged; another incarnation's is ignored for free",
    () =>
      onNetwork(
        { seed: 41 },
        Effect.gen(function* () {
          const { ids, nodes, mallory, raw, seen, events } = yield* withMallory()
          const node0 = nodes[0]!
          const fromMallory = () => events.filter((e) => e.peer === mallory.peerId)
          // Node 0's incarnation, as a reliable message to node 1 shows it.
          yield* node0.broadcaster.send(ids[1]!.peerId, app(-1), { reliable: true })
          yield* advance(100)
          const incarnation = nodes[1]!.delivered.find((d) => d.origin === node0.id.peerId)!.reliable!
            .incarnation

          // No reliable message went to mallory yet: an ack of this incarnation names no stream.
          yield* raw.write(Channel.heartbeat, [encodeAck({ incarnation, cumulative: 0n })])
          yield* advance(50)
          assert.deepStrictEqual(seen(node0).ackRefused, [[mallory.peerId, "unknown-stream"]])
          assert.deepStrictEqual(
            fromMallory().map((e) => e.event),
            ["ProtocolViolation"]
          )
          assert.match(fromMallory()[0]!.detail!, /^ack: no reliable message was sent/)

          // Three reliable broadcasts: mallory's stream holds sequences 1 to 3.
          const receipts: Array<Broadcaster.BroadcastReceipt> = []
          for (const n of [0, 1, 2])
            receipts.push(yield* node0.broadcaster.broadcast(app(n), { reliable: true }))
          yield* advance(200)
          // (Sent again meanwhile, unacknowledged: the first copy of each.)
          const sentToMallory = raw.received
            .flatMap((f) => reliableHeaders(f.messages))
            .filter((h, i, all) => all.findIndex((o) => o.sequence === h.sequence) === i)
          assert.deepStrictEqual(
            sentToMallory.map((h) => [h.incarnation, h.sequence, h.floor]),
            [
              [incarnation, 1n, 1n],
              [incarnation, 2n, 1n],
              [incarnation, 3n, 1n]
            ]
          )
          // Everyone else acknowledged them: what is held now is mallory's share only.
          assert.deepStrictEqual(yield* node0.broadcaster.reliableBuffer, {
            messages: 3,
            bytes: sentToMallory.reduce((sum, h) => sum + h.inner.length, 0),
            entries: 3
          })
          seen(node0).ackRefused.length = 0
          events.length = 0

          yield* raw.write(Channel.heartbeat, [
            encodeAck({ incarnation, cumulative: 4n }),
            encodeAck({ incarnation, cumulative: 1n, ranges: [[3n, 4n]] }),
            encodeAck({ incarnation, cumulative: 1n, ranges: [[1n, 1n]] }),
            encodeAck({ incarnation, cumulative: 0n, ranges: [[3n, 2n]] }),
            encodeAck({
              incarnation,
              cumulative: 0n,
              ranges: [
                [3n, 3n],
                [2n, 2n]
              ]
            }),
            encodeAck({
              incarnation,
              cumulative: 0n,
              ranges: [
                [2n, 2n],
                [3n, 3n]
              ]
            }),
            encodeAck({
              incarnation,
              cumulative: 0n,
              ranges: [
                [2n, 3n],
                [3n, 3n]
              ]
            })
          ])
          yield* advance(50)
          assert.deepStrictEqual(
            seen(node0).ackRefused.map(([peer, reason]) => [peer, reason]),
            [
              [mallory.peerId, "future"],
              [mallory.peerId, "future"],
              [mallory.peerId, "malformed"],
              [mallory.peerId, "malformed"],
              [mallory.peerId, "malformed"],
              [mallory.peerId, "malformed"],
              [mallory.peerId, "malformed"]
            ]
          )
          assert.deepStrictEqual(
            fromMallory()
              .map((e) => e.event)
              .sort(),
            [
              "InvalidMessage",
              "InvalidMessage",
              "InvalidMessage",
              "InvalidMessage",
              "InvalidMessage",
              "ProtocolViolation",
              "ProtocolViolation"
            ]
          )
          for (const e of fromMallory()) assert.match(e.detail!, /^ack: /)
          const afterRefusals = yield* scoreOf(node0, mallory.peerId)
          assert.closeTo(afterRefusals, -(3 * 30 + 5 * 20), 1, "one ProtocolViolation and 7 refused acks")

          // Another incarnation's acks (here one that would acknowledge everything) are ignored, free.
          seen(node0).ackRefused.length = 0
          yield* raw.write(Channel.heartbeat, [
            encodeAck({ incarnation: incarnation + 1n, cumulative: 3n }),
            encodeAck({ incarnation: incarnation + 7n, cumulative: 1n, ranges: [[9n, 9n]] })
          ])
          yield* advance(50)
          assert.deepStrictEqual(seen(node0).ackRefused, [
            [mallory.peerId, "stale"],
            [mallory.peerId, "stale"]
          ])
          assert.lengthOf(fromMallory(), 7, "no reputation event for a stale ack")

          // None of that acknowledged anything; mallory's true ack does.
          assert.strictEqual((yield* node0.broadcaster.reliableBuffer).entries, 3)
          for (const r of receipts) assert.notInclude(yield* r.reliable!.acked, mallory.peerId)
          yield* raw.write(Channel.heartbeat, [encodeAck({ incarnation, cumulative: 3n })])
          yield* advance(50)
          assert.deepStrictEqual(yield* node0.broadcaster.reliableBuffer, {
            messages: 0,
            bytes: 0,
            entries: 0
          })
          for (const r of receipts) assert.include(yield* r.reliable!.acked, mallory.peerId)
          assert.deepInclude(seen(node0).acked, [mallory.peerId, 3])
          assert.lengthOf(fromMallory(), 7)
        })
      )
  )

  it.scoped(
    "an ack flood is cut by the heartbeat channel's rate limit and charged to its sender; the node still delivers and acknowledges the other validators' reliable broadcasts",
    () =>
      onNetwork(
        { seed: 42 },
        Effect.gen(function* () {
          const { ids, nodes, mallory, raw, seen, events } = yield* withMallory()
          const node0 = nodes[0]!
          yield* node0.broadcaster.broadcast(app(-1), { reliable: true })
          yield* advance(100)
          const incarnation = nodes[1]!.delivered.find((d) => d.origin === node0.id.peerId)!.reliable!
            .incarnation
          // Stale acks cost nothing by themselves: whatever mallory loses here, the flood cost it.
          const stale = encodeAck({ incarnation: incarnation + 1n, cumulative: 1n })
          const receipts: Array<Array<Broadcaster.BroadcastReceipt>> = [[], [], [], []]
          for (let round = 0; round < 10; round++) {
            yield* raw.write(Channel.heartbeat, Array(500).fill(stale))
            for (let o = 0; o < 4; o++) {
              for (let k = 0; k < 5; k++) {
                receipts[o]!.push(
                  yield* nodes[o]!.broadcaster.broadcast(app(round * 5 + k), { reliable: true })
                )
              }
            }
            yield* TestClock.adjust(1)
          }
          yield* advance(1_000)
          const stats = yield* raw.connection.stats
          assert.strictEqual(stats.dropped[Channel.heartbeat] ?? 0, 0, "mallory sent all 5,000")

          const heard = seen(node0).ackRefused.filter(([peer]) => peer === mallory.peerId)
          assert.isAbove(heard.length, 0)
          assert.isAtMost(
            heard.length,
            520,
            "the bucket's burst (500) and its refill over the flood reach the sender"
          )
          for (const [, reason] of heard) assert.strictEqual(reason, "stale")
          const charged = events.filter((e) => e.peer === mallory.peerId)
          assert.isAbove(charged.length, 0)
          for (const e of charged) assert.strictEqual(e.event, "RateLimitExceeded")
          assert.isBelow(yield* scoreOf(node0, mallory.peerId), 0)
          for (const e of events)
            if (e.peer !== mallory.peerId) assert.isAbove(e.score, -1, "no one else is charged")

          // Node 0 delivered every other validator's 50, in order, and acknowledged them...
          for (let o = 1; o < 4; o++) {
            assert.deepStrictEqual(numbersFrom(node0, ids[o]!.peerId), range(0, 50))
            for (const r of receipts[o]!) assert.include(yield* r.reliable!.acked, node0.id.peerId)
          }
          // ...and the others acknowledged its own.
          const others = nodes.slice(1).map((n) => n.id.peerId)
          for (const r of receipts[0]!) assert.sameMembers([...(yield* r.reliable!.acked)], others)

          // The limit is a rate, not a ban: once its bucket refilled, mallory's true ack is taken. (The
          // other validators cancel what they hold for mallory, whose node never runs: a broadcaster
          // closing with messages unacknowledged waits `drainTimeout` on the Clock.)
          const last = raw.received
            .flatMap((f) => reliableHeaders(f.messages))
            .reduce((highest, h) => (h.sequence > highest ? h.sequence : highest), 0n)
          assert.strictEqual(last, 51n, "app -1, then 50 broadcasts")
          yield* raw.write(Channel.heartbeat, [encodeAck({ incarnation, cumulative: last })])
          yield* advance(100)
          assert.deepStrictEqual(yield* node0.broadcaster.reliableBuffer, {
            messages: 0,
            bytes: 0,
            entries: 0
          })
          for (let o = 1; o < 4; o++) {
            for (const r of receipts[o]!) yield* r.reliable!.cancel
            assert.deepStrictEqual(yield* nodes[o]!.broadcaster.reliableBuffer, {
              messages: 0,
              bytes: 0,
              entries: 0
            })
          }
        })
      )
  )
})

describe("reliable delivery: bad reliable slots", () => {
  it.scoped(
    "a reliable header cut short, with nothing after it, a slot of another kind inside, sequence 0 or a floor above the sequence, and another origin's envelope inside, are refused as malformed, charged, and deliver nothing",
    () =>
      onNetwork(
        { seed: 43 },
        Effect.gen(function* () {
          const { ids, nodes, mallory, raw, events } = yield* withMallory()
          const node0 = nodes[0]!
          const sealedBy = (signer: Identity.Identity, sequence: bigint, n: number) =>
            Payload.envelope(
              Either.getOrThrow(
                Envelope.seal(signer, {
                  networkId: NETWORK,
                  sequence,
                  payload: Either.getOrThrow(Codec.encode(app(n)))
                })
              ).bytes
            )
          const inc = 5n
          yield* raw.write(Channel.control, [
            reliableApp(inc, 1n, 100).subarray(0, 20),
            Payload.reliable(inc, 1n, 1n, new Uint8Array(0)),
            Payload.reliable(inc, 1n, 1n, Payload.slot(Payload.TREE, bare(101).subarray(1))),
            reliableApp(inc, 0n, 102, 0n),
            reliableApp(inc, 1n, 103, 2n),
            // Node 1's genuine envelope, replayed by mallory in its own stream.
            Payload.reliable(inc, 1n, 1n, sealedBy(ids[1]!, 1n, 104)),
            // Mallory's own envelope is its to send: delivered.
            Payload.reliable(inc, 2n, 1n, sealedBy(mallory, 1n, 105))
          ])
          yield* advance(100)
          const rejected = node0.counts.rejected
          assert.deepStrictEqual(
            rejected.map((r) => [r.peer, r.reason, r.channel]),
            Array(6).fill([mallory.peerId, "malformed", Channel.control])
          )
          const details = [
            /reliable header cut short \(19 of 24 bytes\)/,
            /reliable slot carries nothing/,
            /reliable slot carries kind 0x03/,
            /reliable sequence numbers start at 1/,
            /reliable floor 2 is above the sequence 1/,
            new RegExp(
              `reliable slot from ${mallory.peerId.slice(0, 8)} carries an envelope of ${ids[1]!.peerId.slice(0, 8)}`
            )
          ]
          for (const [i, detail] of details.entries()) assert.match(rejected[i]!.detail, detail)
          assert.deepStrictEqual(
            events.filter((e) => e.peer === mallory.peerId).map((e) => e.event),
            Array(6).fill("InvalidMessage")
          )
          const got = node0.delivered.filter((d) => d.from === mallory.peerId)
          assert.deepStrictEqual(
            got.map((d) => [d.origin, numberOf(d.message), d.reliable]),
            [[mallory.peerId, 105, { incarnation: inc, sequence: 2n }]],
            "only mallory's own envelope, second in its stream"
          )
          assert.isFalse(
            node0.delivered.some((d) => numberOf(d.message) === 104),
            "node 1's replayed envelope is not delivered"
          )
        })
      )
  )

  it.scoped(
    "reordered and duplicated copies are delivered once, in order; duplicates are counted and acknowledged at once; an older incarnation is stale, a newer one starts over",
    () =>
      onNetwork(
        { seed: 44 },
        Effect.gen(function* () {
          const { nodes, mallory, raw, seen } = yield* withMallory()
          const node0 = nodes[0]!
          const inc = 9n
          yield* raw.write(Channel.control, [reliableApp(inc, 3n, 3)])
          yield* advance(50)
          assert.deepStrictEqual(numbersFrom(node0, mallory.peerId), [], "held behind the hole at 1")
          const held = acksIn(raw.received).at(-1)!
          assert.deepStrictEqual(
            [held.incarnation, held.cumulative, held.ranges.map((r) => [r.first, r.last])],
            [inc, 0n, [[3n, 3n]]],
            "acknowledged as held, not delivered"
          )

          for (const seq of [1, 1, 2, 3, 2])
            yield* raw.write(Channel.control, [reliableApp(inc, BigInt(seq), seq)])
          yield* raw.write(Channel.control, [reliableApp(inc, 4n, 4)])
          yield* advance(100)
          assert.deepStrictEqual(numbersFrom(node0, mallory.peerId), [1, 2, 3, 4])
          assert.deepStrictEqual(
            node0.delivered.filter((d) => d.from === mallory.peerId).map((d) => d.reliable),
            [1n, 2n, 3n, 4n].map((sequence) => ({ incarnation: inc, sequence }))
          )
          assert.deepStrictEqual(seen(node0).dropped, Array(3).fill([mallory.peerId, "duplicate"]))
          const last = acksIn(raw.received).at(-1)!
          assert.deepStrictEqual([last.incarnation, last.cumulative, last.ranges], [inc, 4n, []])
          assert.deepStrictEqual(node0.counts.rejected, [])
          // A copy of what was delivered means the ack was lost: it goes again at once, not after ackDelay.
          const acksBefore = acksIn(raw.received).length
          yield* raw.write(Channel.control, [reliableApp(inc, 2n, 2)])
          yield* TestClock.adjust(1)
          assert.strictEqual(acksIn(raw.received).length, acksBefore + 1)
          assert.strictEqual(acksIn(raw.received).at(-1)!.cumulative, 4n)
          assert.lengthOf(seen(node0).dropped, 4)

          // An older incarnation: stale, dropped. A newer one: a new stream from its floor.
          yield* raw.write(Channel.control, [reliableApp(inc - 1n, 5n, 50)])
          yield* raw.write(Channel.control, [reliableApp(inc + 1n, 1n, 60)])
          yield* advance(100)
          assert.deepStrictEqual(seen(node0).dropped.at(-1), [mallory.peerId, "stale"])
          assert.deepStrictEqual(numbersFrom(node0, mallory.peerId), [1, 2, 3, 4, 60])
          const restarted = acksIn(raw.received).at(-1)!
          assert.deepStrictEqual([restarted.incarnation, restarted.cumulative], [inc + 1n, 1n])
        })
      )
  )

  it.scoped(
    "a message beyond the reorder window is dropped unacknowledged, and delivered, in order, once the sender sends it again",
    () =>
      onNetwork(
        { seed: 45 },
        Effect.gen(function* () {
          const network = yield* SimulatedNetwork.SimulatedNetwork
          const acksFrom1: Array<Message.Ack> = []
          const { ids, nodes, seen } = yield* cluster({
            size: 2,
            broadcast: { reorderWindow: 16 },
            peers: { heartbeatInterval: "1 hour" },
            tap: (from, _to, channel, slots) => {
              if (channel !== Channel.heartbeat || from !== key(2).peerId) return
              for (const slot of slots) {
                const m = Either.getOrThrow(Codec.decode(slot as Uint8Array))
                if (m._tag === "Ack") acksFrom1.push(m)
              }
            }
          })
          const [node0, node1] = nodes as [Node, Node]
          const to1 = node1.id.peerId
          // Message 1 is lost; 2 to 17 fit the window above the hole; 18 to 40 do not.
          yield* network.setLink(hostOf(ids[0]!), hostOf(ids[1]!), { loss: 1 })
          yield* node0.broadcaster.send(to1, app(1), { reliable: true })
          yield* TestClock.adjust(1)
          assert.strictEqual((yield* network.linkStats(hostOf(ids[0]!), hostOf(ids[1]!))).lostWrites, 1)
          yield* network.setLink(hostOf(ids[0]!), hostOf(ids[1]!), { loss: 0 })
          for (let n = 2; n <= 40; n++) yield* node0.broadcaster.send(to1, app(n), { reliable: true })
          yield* TestClock.adjust(20)
          assert.deepStrictEqual(numbersFrom(node1, node0.id.peerId), [])
          assert.deepStrictEqual(seen(node1).dropped, Array(23).fill([node0.id.peerId, "beyond-window"]))
          const first = acksFrom1.at(-1)!
          assert.deepStrictEqual(
            [first.cumulative, first.ranges.map((r) => [r.first, r.last])],
            [0n, [[2n, 17n]]],
            "the ack lists what is held, and nothing beyond the window"
          )

          yield* advance(1_000, 10)
          assert.deepStrictEqual(numbersFrom(node1, node0.id.peerId), range(1, 41))
          assert.lengthOf(seen(node1).dropped, 23, "the copies sent again were all taken")
          assert.strictEqual(seen(node0).retransmitted.get(to1), 24, "message 1 and 18 to 40, once each")
          assert.deepStrictEqual(yield* node0.broadcaster.reliableBuffer, {
            messages: 0,
            bytes: 0,
            entries: 0
          })
        })
      )
  )
})

describe("reliable delivery: bounds", () => {
  it.scoped(
    "a receiver that never acknowledges gets at most maxUnackedPerPeer messages (the rest fail for it with ReliableBufferFull), while the others receive and acknowledge everything, and the buffer stays bounded",
    () =>
      onNetwork(
        { seed: 46 },
        Effect.gen(function* () {
          const network = yield* SimulatedNetwork.SimulatedNetwork
          const { ids, nodes, seen } = yield* cluster({
            size: 4,
            broadcast: { maxUnackedPerPeer: 8 },
            peers: { heartbeatInterval: "1 hour" }
          })
          const [node0, node1, node2, node3] = nodes as [Node, Node, Node, Node]
          // Node 3 receives and acknowledges, but nothing it sends reaches node 0.
          yield* network.setLink(hostOf(ids[3]!), hostOf(ids[0]!), { loss: 1 })
          const silent = node3.id.peerId
          const heard = [node1.id.peerId, node2.id.peerId]
          const receipts: Array<Broadcaster.BroadcastReceipt> = []
          // One at a time, with time for acknowledgements between: the bound holds for every peer.
          for (let n = 0; n < 20; n++) {
            receipts.push(yield* node0.broadcaster.broadcast(app(n), { reliable: true }))
            yield* advance(50, 10)
          }
          yield* advance(2_000)

          for (const [n, receipt] of receipts.entries()) {
            if (n < 8) {
              assert.sameMembers([...receipt.queued], [...heard, silent])
              assert.deepStrictEqual(receipt.failed, [])
            } else {
              assert.sameMembers([...receipt.queued], heard)
              assert.lengthOf(receipt.failed, 1)
              const { peer, error } = receipt.failed[0]!
              assert.strictEqual(peer, silent)
              assert.instanceOf(error, Broadcaster.ReliableBufferFull)
              assert.deepInclude(error, { scope: "peer", peer: silent, limit: "messages", max: 8 })
            }
            assert.sameMembers([...(yield* receipt.reliable!.acked)], heard)
          }
          assert.deepStrictEqual(numbersFrom(node1, node0.id.peerId), range(0, 20))
          assert.deepStrictEqual(numbersFrom(node2, node0.id.peerId), range(0, 20))
          // Node 3 took its 8 once each, however often they came again.
          assert.deepStrictEqual(numbersFrom(node3, node0.id.peerId), range(0, 8))
          assert.isAbove(seen(node0).retransmitted.get(silent) ?? 0, 0, "node 3's share is sent again")
          assert.isAbove(seen(node3).dropped.filter(([, why]) => why === "duplicate").length, 0)
          const held = yield* node0.broadcaster.reliableBuffer
          assert.deepInclude(held, { messages: 8, entries: 8 })

          // More broadcasts and more time: node 3's share stays at the bound, nothing else is held.
          for (let n = 20; n < 60; n++) {
            const receipt = yield* node0.broadcaster.broadcast(app(n), { reliable: true })
            assert.deepStrictEqual(
              receipt.failed.map((f) => f.peer),
              [silent]
            )
            yield* advance(50, 10)
          }
          yield* advance(5_000, 250)
          assert.deepStrictEqual(yield* node0.broadcaster.reliableBuffer, held)
          assert.deepStrictEqual(numbersFrom(node1, node0.id.peerId), range(0, 60))
          assert.deepStrictEqual(numbersFrom(node2, node0.id.peerId), range(0, 60))
          assert.deepStrictEqual(numbersFrom(node3, node0.id.peerId), range(0, 8))

          // Cancelling node 3's 8 frees its share (and lets the node close without waiting for them).
          for (const receipt of receipts.slice(0, 8)) yield* receipt.reliable!.cancel
          assert.deepStrictEqual(yield* node0.broadcaster.reliableBuffer, {
            messages: 0,
            bytes: 0,
            entries: 0
          })
        })
      )
  )

  it.scoped(
    "past maxUnackedMessages (or maxUnackedBytes) a reliable broadcast, multicast or send fails with ReliableBufferFull for the node, and succeeds again once acknowledgements free room",
    () =>
      onNetwork(
        { seed: 47 },
        Effect.gen(function* () {
          const { ids, nodes } = yield* cluster({
            size: 3,
            broadcast: { maxUnackedMessages: 4, maxUnackedBytes: 4_096 },
            peers: { heartbeatInterval: "1 hour" }
          })
          const [node0, node1, node2] = nodes as [Node, Node, Node]
          const full = (error: unknown, limit: "messages" | "bytes", max: number) => {
            assert.instanceOf(error, Broadcaster.ReliableBufferFull)
            assert.deepInclude(error, { scope: "node", limit, max })
          }
          // No time passes, so no acknowledgement comes back: the four are held.
          for (let n = 0; n < 4; n++) yield* node0.broadcaster.broadcast(app(n), { reliable: true })
          assert.deepInclude(yield* node0.broadcaster.reliableBuffer, { messages: 4, entries: 8 })
          full(yield* Effect.flip(node0.broadcaster.broadcast(app(4), { reliable: true })), "messages", 4)
          full(
            yield* Effect.flip(node0.broadcaster.multicast([ids[1]!.peerId], app(4), { reliable: true })),
            "messages",
            4
          )
          full(
            yield* Effect.flip(node0.broadcaster.send(ids[1]!.peerId, app(4), { reliable: true })),
            "messages",
            4
          )

          yield* advance(200)
          assert.deepStrictEqual(yield* node0.broadcaster.reliableBuffer, {
            messages: 0,
            bytes: 0,
            entries: 0
          })
          const again = yield* node0.broadcaster.broadcast(app(4), { reliable: true })
          assert.sameMembers([...again.queued], [ids[1]!.peerId, ids[2]!.peerId])
          yield* advance(200)
          assert.deepStrictEqual(numbersFrom(node1, node0.id.peerId), range(0, 5))
          assert.deepStrictEqual(numbersFrom(node2, node0.id.peerId), range(0, 5))

          // By bytes: a message larger than the whole buffer never fits.
          const large = Message.AppMessage.make({ topic: "r", data: new Uint8Array(5_000) })
          full(yield* Effect.flip(node0.broadcaster.broadcast(large, { reliable: true })), "bytes", 4_096)
          assert.deepStrictEqual(yield* node0.broadcaster.reliableBuffer, {
            messages: 0,
            bytes: 0,
            entries: 0
          })
        })
      )
  )
})

describe("reliable delivery: cancellation", () => {
  /** Four validators; every reliable slot node 0 queues, seen by `tap` (numbered by batch: `mark`). */
  const tapped = Effect.gen(function* () {
    const sent: Array<{
      readonly to: PeerId
      readonly header: Payload.ReliableHeader
      readonly index: number
    }> = []
    let index = 0
    const { ids, nodes, seen } = yield* cluster({
      size: 4,
      peers: { heartbeatInterval: "1 hour" },
      tap: (from, to, _channel, slots) => {
        if (from !== key(1).peerId) return
        index++
        for (const header of reliableHeaders(slots)) sent.push({ to, header, index })
      }
    })
    return { ids, nodes: nodes as [Node, Node, Node, Node], seen, sent, mark: () => index }
  })

  it.scoped(
    "a cancelled message is never sent again; its partitioned recipient, healed, skips it by the floor and receives the later ones; awaitAcks fails with AcksUnreachable",
    () =>
      onNetwork(
        { seed: 48 },
        Effect.gen(function* () {
          const network = yield* SimulatedNetwork.SimulatedNetwork
          const { ids, nodes, seen, sent, mark } = yield* tapped
          const [node0, node1, node2, node3] = nodes
          const cut = node3.id.peerId
          const everyone = nodes.slice(1).map((n) => n.id.peerId)
          const first = yield* node0.broadcaster.broadcast(app(0), { reliable: true })
          yield* advance(200)
          assert.sameMembers([...(yield* first.reliable!.acked)], everyone)

          yield* network.isolate(hostOf(ids[3]!))
          const cancelled = yield* node0.broadcaster.broadcast(app(1), { reliable: true })
          const waiting = yield* Effect.fork(cancelled.reliable!.awaitAcks(3))
          yield* advance(1_000)
          const sequence = 2n
          const before = sent.filter((s) => s.to === cut && s.header.sequence === sequence)
          assert.isAtLeast(before.length, 3, "sent, and sent again while unacknowledged")
          assert.sameMembers([...(yield* cancelled.reliable!.acked)], [node1.id.peerId, node2.id.peerId])

          const cancelledAt = mark()
          yield* cancelled.reliable!.cancel
          const error = yield* failureOf(waiting)
          assert.instanceOf(error, Broadcaster.AcksUnreachable)
          assert.deepInclude(error, { reason: "cancelled", wanted: 3, acked: 2 })
          const late = yield* Effect.flip(cancelled.reliable!.awaitAcks(3))
          assert.deepInclude(late, { reason: "cancelled" })
          assert.lengthOf(yield* cancelled.reliable!.awaitAcks(2), 2, "a quorum already met still is")
          assert.deepStrictEqual(yield* node0.broadcaster.reliableBuffer, {
            messages: 0,
            bytes: 0,
            entries: 0
          })

          yield* advance(3_000)
          yield* network.heal
          yield* advance(200)
          for (const n of [2, 3]) yield* node0.broadcaster.broadcast(app(n), { reliable: true })
          yield* advance(1_000)
          const after = sent.filter((s) => s.index > cancelledAt)
          assert.isAbove(after.length, 0)
          assert.deepStrictEqual(
            after.filter((s) => s.to === cut).map((s) => [s.header.sequence, s.header.floor]),
            [
              [3n, 3n],
              [4n, 3n]
            ],
            "only the later messages, with the floor past the cancelled one"
          )
          assert.deepStrictEqual(numbersFrom(node3, node0.id.peerId), [0, 2, 3])
          assert.deepStrictEqual(seen(node3).skipped, [[node0.id.peerId, 1, "cancelled"]])
          assert.deepStrictEqual(numbersFrom(node1, node0.id.peerId), [0, 1, 2, 3])
          assert.deepStrictEqual(yield* node0.broadcaster.reliableBuffer, {
            messages: 0,
            bytes: 0,
            entries: 0
          })
        })
      )
  )

  it.scoped("a reliable broadcast bound to a scope is cancelled when the scope closes", () =>
    onNetwork(
      { seed: 49 },
      Effect.gen(function* () {
        const network = yield* SimulatedNetwork.SimulatedNetwork
        const { ids, nodes, sent, mark } = yield* tapped
        const [node0, node1, node2, node3] = nodes
        yield* network.isolate(hostOf(ids[3]!))
        const view = yield* Scope.make()
        const receipt = yield* node0.broadcaster.broadcast(app(1), { reliable: true, scope: view })
        const waiting = yield* Effect.fork(receipt.reliable!.awaitAcks(3))
        yield* advance(500)
        assert.sameMembers([...(yield* receipt.reliable!.acked)], [node1.id.peerId, node2.id.peerId])
        assert.deepInclude(yield* node0.broadcaster.reliableBuffer, { messages: 1, entries: 1 })

        const closedAt = mark()
        yield* Scope.close(view, Exit.void)
        assert.deepInclude(yield* failureOf(waiting), {
          _tag: "AcksUnreachable",
          reason: "cancelled"
        })
        assert.deepStrictEqual(yield* node0.broadcaster.reliableBuffer, { messages: 0, bytes: 0, entries: 0 })
        yield* advance(2_000)
        assert.deepStrictEqual(
          sent.filter((s) => s.index > closedAt),
          [],
          "nothing of it is sent again"
        )
        yield* network.heal
        yield* advance(200)
        assert.deepStrictEqual(numbersFrom(node3, node0.id.peerId), [])
      })
    )
  )
})
