// Whole clusters on the simulated network under TestClock: the real connection core and handshake,
// with time and faults chosen by the test.
import { assert, describe, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as Queue from "effect/Queue"
import * as Stream from "effect/Stream"
import * as TestClock from "effect/TestClock"
import { MemoryTransport, SimulatedNetwork, type Transport, TransportConfig } from "../src/index.js"
import { accept, receiver } from "./fixtures/conformance.js"
import { buildTransport, type Harness, withNetwork } from "./fixtures/harness.js"
import { identity } from "./fixtures/identities.js"

const harness: Harness<SimulatedNetwork.SimulatedNetwork> = {
  name: "memory",
  clock: "test",
  layer: (id, config) => MemoryTransport.layer({ identity: id, config }),
  listenAddress: (n) => `${host(n)}:0`,
  provide: (effect) => effect as Effect.Effect<never, never, never>
}
const host = (n: number) => MemoryTransport.hostOf(identity(n).peerId)
const { consensus } = TransportConfig.Channel

/** Lets every fiber that can run, run (deliveries due now happen on the next scheduling steps). */
const settle = Effect.repeatN(Effect.yieldNow(), 20)

describe("MemoryTransport clusters under TestClock", () => {
  it.scoped("honours link latency to the millisecond, through the handshake and the connection", () =>
    withNetwork(
      {},
      Effect.gen(function* () {
        const network = yield* SimulatedNetwork.SimulatedNetwork
        yield* network.setLinkBoth(host(1), host(2), { latency: 25 })
        const a = yield* buildTransport(harness, identity(1))
        const b = yield* buildTransport(harness, identity(2))
        const listener = yield* a.listen(`${host(1)}:9000`)
        const dialing = yield* Effect.fork(b.dial(listener.address, identity(1).peerId))
        // Hellos cross (25 ms), the dialer's Auth (25 ms), then the listener's (25 ms): connected after
        // three one-way delays, not before.
        yield* TestClock.adjust("74 millis")
        yield* settle
        assert.isNull(dialing.unsafePoll(), "connected before three one-way delays")
        yield* TestClock.adjust("1 millis")
        const connection = yield* Fiber.join(dialing)
        const server = yield* accept(listener)
        const r = yield* receiver(server)
        const queue = yield* Queue.unbounded<Transport.InboundFrame>()
        yield* r.take(1).pipe(
          Effect.flatMap((frames) => Queue.offerAll(queue, frames)),
          Effect.fork
        )
        yield* connection.send(consensus, [Uint8Array.of(1)])
        yield* TestClock.adjust("24 millis")
        yield* settle
        assert.strictEqual(yield* Queue.size(queue), 0, "delivered before 25 ms")
        yield* TestClock.adjust("1 millis")
        const [frame] = yield* Queue.takeAll(queue).pipe(
          Effect.flatMap((c) =>
            c.length > 0 ? Effect.succeed([...c]) : Effect.map(Queue.take(queue), (f) => [f])
          )
        )
        assert.strictEqual(frame!.messages[0]![0], 1)
      })
    )
  )

  it.scoped("a partition drops traffic across it and not within; healing lets new connections through", () =>
    withNetwork(
      { defaults: { latency: 5 } },
      Effect.gen(function* () {
        const network = yield* SimulatedNetwork.SimulatedNetwork
        const nodes = yield* Effect.forEach([1, 2, 3], (n) => buildTransport(harness, identity(n)))
        const listeners = yield* Effect.forEach([1, 2, 3], (n, i) => nodes[i]!.listen(`${host(n)}:9000`))
        // 1 dials 2 and 3; 2 dials 3.
        const dials = yield* Effect.fork(
          Effect.all(
            [
              nodes[0]!.dial(listeners[1]!.address, identity(2).peerId),
              nodes[0]!.dial(listeners[2]!.address, identity(3).peerId),
              nodes[1]!.dial(listeners[2]!.address, identity(3).peerId)
            ],
            { concurrency: "unbounded" }
          )
        )
        yield* TestClock.adjust("20 millis")
        const [oneTwo, , twoThree] = yield* Fiber.join(dials)
        const atTwo = yield* receiver(yield* accept(listeners[1]!))
        const atThree = [yield* accept(listeners[2]!), yield* accept(listeners[2]!)]
        const atThreeFromTwo = yield* receiver(atThree.find((c) => c.remotePeer === identity(2).peerId)!)

        yield* network.partition([[host(1)], [host(2), host(3)]])
        yield* oneTwo!.send(consensus, [Uint8Array.of(12)])
        yield* twoThree!.send(consensus, [Uint8Array.of(23)])
        yield* TestClock.adjust("50 millis")
        assert.strictEqual(
          (yield* atThreeFromTwo.take(1))[0]!.messages[0]![0],
          23,
          "within a side, traffic flows"
        )
        const crossed = yield* Effect.fork(atTwo.take(1))
        yield* settle
        assert.isNull(crossed.unsafePoll(), "across the partition, nothing arrives")
        yield* Fiber.interrupt(crossed)

        // A dial across the partition times out (the SYN is lost), by the handshake timeout on the Clock.
        const across = yield* Effect.fork(
          Effect.flip(nodes[0]!.dial(listeners[1]!.address, identity(2).peerId))
        )
        yield* TestClock.adjust("5 seconds")
        assert.strictEqual((yield* Fiber.join(across)).reason, "timeout")

        yield* network.heal
        const again = yield* Effect.fork(nodes[0]!.dial(listeners[1]!.address, identity(2).peerId))
        yield* TestClock.adjust("20 millis")
        const healed = yield* Fiber.join(again)
        const atTwoAgain = yield* receiver(yield* accept(listeners[1]!))
        yield* healed.send(consensus, [Uint8Array.of(99)])
        yield* TestClock.adjust("10 millis")
        assert.strictEqual((yield* atTwoAgain.take(1))[0]!.messages[0]![0], 99)
      })
    )
  )

  /** 100 nodes; node i dials every node j > i (4,950 connections), then sends one frame on each. */
  const mesh = (seed: number) =>
    withNetwork(
      { seed, defaults: { latency: 10, jitter: 5 } },
      Effect.gen(function* () {
        const network = yield* SimulatedNetwork.SimulatedNetwork
        const ids = Array.from({ length: 100 }, (_, i) => i + 10)
        const nodes = yield* Effect.forEach(ids, (id) => buildTransport(harness, identity(id)))
        const listeners = yield* Effect.forEach(ids, (id, i) => nodes[i]!.listen(`${host(id)}:9000`))
        const received = yield* Queue.unbounded<string>()
        yield* Effect.forEach(
          listeners,
          (listener, i) =>
            Stream.runForEach(listener.connections, (connection) =>
              Stream.runForEach(connection.frames, () =>
                Queue.offer(received, `${connection.remotePeer.slice(0, 8)}->${ids[i]}`)
              ).pipe(Effect.forkScoped)
            ).pipe(Effect.forkScoped),
          { discard: true }
        )
        const pairs = ids.flatMap((_, i) => ids.slice(i + 1).map((_, k) => [i, i + 1 + k] as const))
        const dialing = yield* Effect.fork(
          Effect.forEach(pairs, ([i, j]) => nodes[i]!.dial(listeners[j]!.address, identity(ids[j]!).peerId), {
            concurrency: "unbounded"
          })
        )
        yield* TestClock.adjust("100 millis")
        const connections = yield* Fiber.join(dialing)
        yield* Effect.forEach(connections, (c) => c.send(consensus, [Uint8Array.of(1)]), { discard: true })
        yield* TestClock.adjust("100 millis")
        const frames = yield* Queue.takeN(received, pairs.length)
        return {
          connections: connections.length,
          distinct: new Set(frames).size,
          stats: yield* network.stats
        }
      })
    )

  it.scoped(
    "a 100-node full mesh connects and delivers a frame on every connection, the same way twice",
    () =>
      Effect.gen(function* () {
        const first = yield* Effect.scoped(mesh(42))
        assert.strictEqual(first.connections, 4950)
        assert.strictEqual(first.distinct, 4950, "one frame on every connection")
        assert.strictEqual(first.stats.lostWrites, 0)
        const second = yield* Effect.scoped(mesh(42))
        assert.deepStrictEqual(second.stats, first.stats, "same seed, same traffic: same network counters")
      }),
    // Bounded work, not a timing check: room for a loaded 2-core CI machine.
    180_000
  )
})
