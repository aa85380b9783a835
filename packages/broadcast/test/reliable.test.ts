// Reliable delivery on the simulated network under TestClock: acknowledgements, retransmission
// through loss and cut links, per-origin order, exactly once, sender restarts and cancellation.
import { describe, expect, it } from "@effect/vitest"
import { SimulatedNetwork } from "@hotstuff2/transport"
import { Message } from "@hotstuff2/wire"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as TestClock from "effect/TestClock"
import type { Broadcaster } from "../src/index.js"
import {
  advance,
  awaitMesh,
  hostOf,
  type Node,
  onNetwork,
  startCluster,
  startNode
} from "./fixtures/cluster.js"

const app = (origin: number, n: number) =>
  Message.AppMessage.make({ topic: `o${origin}`, data: new TextEncoder().encode(String(n)) })

/** The numbers `origin`'s app messages carried, in the order `node` delivered them. */
const numbersFrom = (node: Node, origin: number): Array<number> =>
  node.delivered
    .filter((d) => d.message._tag === "AppMessage" && d.message.topic === `o${origin}`)
    .map((d) => Number(new TextDecoder().decode((d.message as Message.AppMessage).data)))

const range = (n: number) => Array.from({ length: n }, (_, i) => i)

describe("reliable delivery", () => {
  it.scoped(
    "delivers every reliable broadcast once, in order, and awaitAcks sees n - 1 acknowledgements",
    () =>
      onNetwork(
        { seed: 3 },
        Effect.gen(function* () {
          const { nodes } = yield* startCluster({ size: 4 })
          const live = nodes as ReadonlyArray<Node>
          yield* awaitMesh(live)
          const receipts: Array<Broadcaster.BroadcastReceipt> = []
          for (const i of range(100))
            receipts.push(yield* live[0]!.broadcaster.broadcast(app(0, i), { reliable: true }))
          const waiting = yield* Effect.fork(receipts[99]!.reliable!.awaitAcks(3))
          yield* advance(1_000)
          const acked = yield* Fiber.join(waiting)
          expect(new Set(acked)).toEqual(new Set(live.slice(1).map((n) => n.id.peerId)))
          for (const node of live.slice(1)) {
            expect(numbersFrom(node, 0)).toEqual(range(100))
            const sequences = node.delivered
              .filter((d) => d.origin === live[0]!.id.peerId)
              .map((d) => d.reliable!.sequence)
            expect(sequences).toEqual(range(100).map((i) => BigInt(i + 1)))
          }
          expect(yield* live[0]!.broadcaster.reliableBuffer).toEqual({ messages: 0, bytes: 0, entries: 0 })
        })
      )
  )

  /**
   * The acceptance: 4 validators, 10% loss on every link, one validator's links cut for 2 s
   * every 5 s (a different one each time), for a simulated minute; each origin broadcasts 10,000
   * reliable messages. Every validator delivers each origin's messages once and in its order.
   * `restart`: origin 0 closes mid-run (gracefully: its close waits for acknowledgements) and a new
   * run of it carries on.
   */
  const lossyMinute = (restart: boolean) =>
    onNetwork(
      { seed: restart ? 11 : 7, defaults: { loss: 0.1 } },
      Effect.gen(function* () {
        const network = yield* SimulatedNetwork.SimulatedNetwork
        // Acks 50 ms apart (not 10): a fifth of the timer's wake-ups, each a TestClock step.
        const options = {
          size: 4,
          peers: { heartbeatInterval: 1000, missedHeartbeats: 5 },
          broadcast: { ackDelay: 50, drainTimeout: 2_000 }
        }
        const { ids, nodes } = yield* startCluster(options)
        const live = [...(nodes as ReadonlyArray<Node>)]
        yield* awaitMesh(live)
        const perOrigin = 10_000
        const sent = [0, 0, 0, 0]
        const step = 100
        const perStep = Math.ceil(perOrigin / (55_000 / step))
        for (let t = 0; t < 60_000; t += step) {
          if (t % 5_000 === 0) {
            const cut = (t / 5_000) % 4
            yield* network.isolate(hostOf(ids[cut]!))
          } else if (t % 5_000 === 2_000) {
            yield* network.heal
          }
          // Between two cuts: a drain cannot finish while a peer is cut off (it gives up then).
          if (restart && t === 32_500) {
            // Its close waits for acknowledgements (drainTimeout) on the Clock: let time run meanwhile.
            const stopping = yield* Effect.fork(live[0]!.stop)
            yield* advance(2_500)
            yield* Fiber.join(stopping)
            live[0] = yield* startNode(ids[0]!, ids, options)
          }
          for (let o = 0; o < 4; o++) {
            for (let k = 0; k < perStep && sent[o]! < perOrigin; k++) {
              yield* live[o]!.broadcaster.broadcast(app(o, sent[o]!), { reliable: true })
              sent[o]!++
            }
          }
          yield* TestClock.adjust(step)
        }
        yield* network.heal
        yield* advance(30_000, 250)
        for (let r = 0; r < 4; r++) {
          for (let o = 0; o < 4; o++) {
            if (o === r) continue
            // The restarted node's deliveries begin at its restart: compare what it got since.
            const got = restart && r === 0 ? numbersFrom(live[0]!, o) : numbersFrom(live[r]!, o)
            const expected =
              restart && r === 0 ? range(perOrigin).slice(perOrigin - got.length) : range(perOrigin)
            expect(got, `origin ${o} at node ${r}: ${got.length} delivered`).toEqual(expected)
          }
        }
        for (const node of live) expect((yield* node.broadcaster.reliableBuffer).messages).toBe(0)
        const stats = yield* network.stats
        expect(stats.lostWrites).toBeGreaterThan(1_000)
      })
    )

  it.scoped(
    "10% loss and cut links for a simulated minute: 4 x 10,000 reliable broadcasts, each delivered once and in order",
    () => lossyMinute(false),
    { timeout: 300_000 }
  )

  it.scoped("the same with origin 0 restarting in the middle", () => lossyMinute(true), { timeout: 300_000 })

  it.scoped("a reliable multicast naming a peer twice delivers it once, and cancelling it stops it", () =>
    onNetwork(
      { seed: 5 },
      Effect.gen(function* () {
        const network = yield* SimulatedNetwork.SimulatedNetwork
        const { ids, nodes } = yield* startCluster({ size: 2 })
        const [a, b] = nodes as ReadonlyArray<Node>
        yield* awaitMesh([a, b])
        const once = yield* a!.broadcaster.multicast([b!.id.peerId, b!.id.peerId], app(0, 0), {
          reliable: true
        })
        expect(once.reliable!.recipients).toEqual([b!.id.peerId])
        yield* advance(500)
        expect(numbersFrom(b!, 0)).toEqual([0])
        expect(yield* once.reliable!.acked).toEqual([b!.id.peerId])
        // Cut off, then cancelled: nothing of it is held, and it never arrives.
        yield* network.isolate(hostOf(ids[1]!))
        const cancelled = yield* a!.broadcaster.multicast([b!.id.peerId, b!.id.peerId], app(0, 1), {
          reliable: true
        })
        yield* cancelled.reliable!.cancel
        expect(yield* a!.broadcaster.reliableBuffer).toEqual({ messages: 0, bytes: 0, entries: 0 })
        yield* network.heal
        yield* advance(3_000)
        expect(numbersFrom(b!, 0)).toEqual([0])
      })
    )
  )
})
