// A peer's frames reach the inbox in the order it sent them, whether each one took the fast path
// (queued in the connection's data callback) or went through the connection's reader fiber: a frame
// may never overtake one the reader holds. Node 2 is a bare transport, so each test sends its frames
// one by one, write by write. (Found by review: both failed before the connection core held its
// receiver until the reader asked again with nothing queued.)
import { assert, describe, it } from "@effect/vitest"
import { MemoryTransport, Transport, TransportConfig } from "@hotstuff2/transport"
import { Codec } from "@hotstuff2/wire"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import * as TestClock from "effect/TestClock"
import { address, identity, NETWORK, startNode, withNetwork } from "./fixtures/cluster.js"

const { consensus, heartbeat } = TransportConfig.Channel

/**
 * Node 2 as a bare transport connected to node 1; `send(i)` queues a frame of one message starting
 * with `i`, 40 KiB long so that the connection never joins two sends into one frame.
 */
const bareConnection = Effect.gen(function* () {
  const transport = yield* Layer.build(
    MemoryTransport.layer({ identity: identity(2), config: { networkId: NETWORK } })
  ).pipe(Effect.map((c) => Context.get(c, Transport.Transport)))
  const dialing = yield* Effect.fork(transport.dial(address(1), identity(1).peerId))
  yield* TestClock.adjust("50 millis")
  const connection = yield* Fiber.join(dialing)
  yield* TestClock.adjust("50 millis")
  const send = (i: number) =>
    assert.isUndefined(connection.unsafeSend(consensus, [new Uint8Array(40 * 1024).fill(i)]))
  return { connection, send }
})

describe("PeerManager: order of a peer's frames", () => {
  it.scoped("a ping among consensus frames: a later write does not overtake the frames behind it", () =>
    withNetwork(
      { defaults: { latency: 5 } },
      Effect.gen(function* () {
        const node = yield* startNode(1, [1, 2])
        const { connection, send } = yield* bareConnection
        const ping = Either.getOrThrow(Codec.encode({ _tag: "Ping", nonce: 1n }))
        send(0) // the reader touches the registry for this one; later frames take the fast path
        yield* TestClock.adjust("10 millis")
        // One turn: 1 is written at once; the ping (for the reader) and 2 leave together after it.
        yield* Effect.sync(() => {
          send(1)
          assert.isUndefined(connection.unsafeSend(heartbeat, [ping]))
          send(2)
        })
        yield* Effect.yieldNow()
        // The next turn, delivered in the same millisecond, before the reader runs: 3.
        yield* Effect.sync(() => send(3))
        yield* TestClock.adjust("10 millis")
        assert.deepStrictEqual(
          node.manager.unsafePoll(100).map((f) => f.messages[0]![0]!),
          [0, 1, 2, 3]
        )
      })
    )
  )

  it.scoped("a full inbox: a frame sent as room appears does not overtake the reader's batch", () =>
    withNetwork(
      {},
      Effect.gen(function* () {
        const node = yield* startNode(1, [1, 2], { inboundFramesPerPeer: 2 })
        const { send } = yield* bareConnection
        const got: Array<number> = []
        const poll = () => {
          for (const f of node.manager.unsafePoll(100)) got.push(f.messages[0]![0]!)
        }
        // 1 (reader: a registry touch is due) and 2 (fast path) fill the inbox (2 per peer); 3 is
        // refused, and the reader takes it and waits for room.
        for (const i of [1, 2, 3]) {
          send(i)
          yield* TestClock.adjust("1 millis")
        }
        // 4, 5 and 6 queue in the connection behind the waiting reader.
        send(4)
        send(5)
        send(6)
        yield* TestClock.adjust("1 millis")
        // The application reads: 3 goes in, the reader takes [4, 5, 6]: 4 goes in, it waits on 5.
        poll()
        yield* TestClock.adjust("1 millis")
        // The application reads again, and node 2 sends 7 in the same step.
        yield* Effect.sync(() => {
          poll()
          send(7)
        })
        for (let k = 0; k < 5; k++) {
          yield* TestClock.adjust("1 millis")
          poll()
        }
        assert.deepStrictEqual(got, [1, 2, 3, 4, 5, 6, 7])
      })
    )
  )
})
