// The node-wide memory budget over all of a transport's connections, on the simulated network under
// TestClock: outbound, a send past `maxQueuedOutboundBytes` is refused with `Backpressure` (limit
// "node") even to a peer whose own queue is empty; inbound, past `maxBufferedInboundBytes` the
// connections that keep receiving pause their sockets, and read again once the consumers catch up.
import { assert, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as TestClock from "effect/TestClock"
import { MemoryTransport, type Transport } from "../src/index.js"
import { accept } from "./fixtures/conformance.js"
import { type ConfigOverrides, memoryTransport, withNetwork } from "./fixtures/harness.js"
import { identity } from "./fixtures/identities.js"

const KiB = 1024
const { consensus } = { consensus: 1 }

const transportOf = (n: number, config: ConfigOverrides = {}) => memoryTransport(identity(n), config)

const addressOf = (n: number) => `${MemoryTransport.hostOf(identity(n).peerId)}:9000`

/** `from` dials `to` (listening); returns both ends. */
const connect = (from: Transport.TransportShape, listener: Transport.Listener, to: number) =>
  Effect.gen(function* () {
    const dialing = yield* Effect.fork(from.dial(addressOf(to), identity(to).peerId))
    const accepting = yield* Effect.fork(accept(listener))
    yield* TestClock.adjust("50 millis")
    return { out: yield* Fiber.join(dialing), in: yield* Fiber.join(accepting) }
  })

it.scoped("outbound: past maxQueuedOutboundBytes, a send to any peer gets Backpressure (node)", () =>
  withNetwork(
    { seed: 1, sendBufferBytes: 16 * KiB },
    Effect.gen(function* () {
      const sender = yield* transportOf(1, { maxQueuedOutboundBytes: 256 * KiB })
      const peers = yield* Effect.all([transportOf(2), transportOf(3)])
      const listeners = yield* Effect.all([peers[0].listen(addressOf(2)), peers[1].listen(addressOf(3))])
      const toA = (yield* connect(sender, listeners[0], 2)).out
      const toB = (yield* connect(sender, listeners[1], 3)).out
      // No clock moves while sending: nothing is delivered, A's pipe blocks at 16 KiB in flight and
      // its queue takes the rest, until the node's 256 KiB are queued.
      const message = new Uint8Array(8 * KiB).fill(1)
      let refusedAt = -1
      for (let i = 0; i < 64; i++) {
        const error = toA.unsafeSend(consensus, [message])
        if (error !== undefined) {
          assert.strictEqual(error._tag, "Backpressure")
          assert.strictEqual((error as { limit?: string }).limit, "node")
          refusedAt = i
          break
        }
      }
      assert.isAbove(refusedAt, 20, "A's own queue (64 MiB) is far from full: the node's budget refused")
      // B's queue is empty, but the node's budget is spent.
      const toBError = toB.unsafeSend(consensus, [message])
      assert.strictEqual(toBError?._tag, "Backpressure")
      assert.strictEqual((toBError as { limit?: string }).limit, "node")
      assert.match(toBError!.message, /maxQueuedOutboundBytes/)
      // Once A's queue drains, there is room again.
      yield* TestClock.adjust("1 second")
      assert.isUndefined(toB.unsafeSend(consensus, [message]))
    })
  )
)

it.scoped(
  "inbound: past maxBufferedInboundBytes, connections that keep receiving pause until consumers take",
  () =>
    withNetwork(
      { seed: 2 },
      Effect.gen(function* () {
        const receiver = yield* transportOf(1, { maxBufferedInboundBytes: 64 * KiB })
        const listener = yield* receiver.listen(addressOf(1))
        const senders = yield* Effect.all([transportOf(2), transportOf(3)])
        const a = yield* connect(senders[0], listener, 1)
        const b = yield* connect(senders[1], listener, 1)
        // Nobody takes at the receiver. b sends 16 KiB, then a sends 96 KiB, then b 8 KiB more: each
        // connection's own limit (64 MiB) is far away; the node's 64 KiB is what pauses them.
        const message = new Uint8Array(8 * KiB).fill(2)
        const send = (end: Transport.Connection, n: number) =>
          Effect.gen(function* () {
            for (let i = 0; i < n; i++) {
              assert.isUndefined(end.unsafeSend(consensus, [message]))
              yield* TestClock.adjust("5 millis")
            }
          })
        yield* send(b.out, 2)
        yield* send(a.out, 12)
        yield* send(b.out, 1)
        yield* TestClock.adjust("100 millis")
        assert.isTrue((yield* a.in.stats).readPaused, "a, which filled the node's budget, is paused")
        assert.isTrue((yield* b.in.stats).readPaused, "b, which queued a frame over it, is paused too")
        assert.isBelow((yield* a.in.stats).framesReceived, 12, "a's socket holds the rest")
        // a's consumer takes what a has: the total falls under the budget, and b reads again too.
        yield* a.in.receive
        yield* TestClock.adjust("5 millis")
        assert.isFalse((yield* b.in.stats).readPaused, "b resumed when a's consumer made room")
        // Consumers on both: everything sent arrives in the end (a's first take included).
        let got = 0
        for (const end of [a.in, b.in]) {
          yield* Effect.forkScoped(
            Effect.forever(
              Effect.map(end.receive, (frames) => {
                for (const f of frames) for (const m of f.messages) got += m.length
              })
            )
          )
        }
        yield* TestClock.adjust("1 second")
        const read = (yield* a.in.stats).framesReceived + (yield* b.in.stats).framesReceived
        assert.strictEqual(read, 15, "every message sent was read in the end")
        assert.isAtLeast(got, 8 * KiB * 3, "the consumers got what had been held back")
      })
    )
)
