// The seams discovery and validator-set epochs use, under TestClock on the simulated network: a
// channel taken by its own consumer, a validator set that changes at run time, and a peer dialled on
// demand whose key was not known.
import { assert, describe, it } from "@effect/vitest"
import { TransportConfig } from "@hotstuff2/transport"
import * as Chunk from "effect/Chunk"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as Option from "effect/Option"
import * as Stream from "effect/Stream"
import * as TestClock from "effect/TestClock"
import { address, identity, startNode, validators, withNetwork } from "./fixtures/cluster.js"

const { consensus, discovery } = TransportConfig.Channel
const id = (n: number) => identity(n).peerId

describe("PeerManager seams", () => {
  it.scoped(
    "a separate channel's frames go to its own consumer, not to inbound; past its room they are dropped and counted",
    () =>
      withNetwork(
        {},
        Effect.gen(function* () {
          const a = yield* startNode(1, [1, 2], { inboundFramesPerPeer: 4 }, validators([1, 2]), [discovery])
          const b = yield* startNode(2, [1, 2])
          yield* TestClock.adjust("5 seconds")
          assert.deepStrictEqual(yield* a.manager.connected, [id(2)])
          const side = yield* Effect.fork(Stream.runCollect(Stream.take(a.manager.inboundOn(discovery), 2)))
          const main = yield* Effect.fork(Stream.runCollect(Stream.take(a.manager.inbound, 1)))
          yield* b.manager.send(id(1), discovery, [Uint8Array.of(1)])
          yield* b.manager.send(id(1), consensus, [Uint8Array.of(2)])
          yield* b.manager.send(id(1), discovery, [Uint8Array.of(3)])
          yield* TestClock.adjust("100 millis")
          const sideFrames = Chunk.toReadonlyArray(yield* Fiber.join(side))
          const mainFrames = Chunk.toReadonlyArray(yield* Fiber.join(main))
          assert.deepStrictEqual(
            sideFrames.map((f) => [f.channel, [...f.messages[0]!]]),
            [
              [discovery, [1]],
              [discovery, [3]]
            ]
          )
          assert.deepStrictEqual(
            mainFrames.map((f) => [f.channel, [...f.messages[0]!]]),
            [[consensus, [2]]]
          )
          // Nobody reads the discovery channel now: past inboundFramesPerPeer (4) its frames are dropped,
          // and consensus frames still arrive.
          for (let i = 0; i < 10; i++) {
            yield* b.manager.send(id(1), discovery, [Uint8Array.of(i)])
            yield* TestClock.adjust("10 millis")
          }
          yield* b.manager.send(id(1), consensus, [Uint8Array.of(9)])
          yield* TestClock.adjust("100 millis")
          const next = Chunk.toReadonlyArray(yield* Stream.runCollect(Stream.take(a.manager.inbound, 1)))
          assert.deepStrictEqual([...next[0]!.messages[0]!], [9])
          assert.strictEqual((yield* a.manager.separateDropped).get(discovery), 6)
          assert.deepStrictEqual(yield* a.manager.connected, [id(2)])
        })
      )
  )

  it.scoped(
    "a new validator set: the newcomer is dialled, the leaver's connection closed as not-a-validator and refused after",
    () =>
      withNetwork(
        {},
        Effect.gen(function* () {
          const a = yield* startNode(1, [1, 2])
          const b = yield* startNode(2, [1, 2])
          const c = yield* startNode(3, [1, 3])
          yield* TestClock.adjust("5 seconds")
          assert.deepStrictEqual(yield* a.manager.connected, [id(2)])
          yield* a.manager.setValidators(validators([1, 3]))
          yield* TestClock.adjust("5 seconds")
          assert.deepStrictEqual(yield* a.manager.connected, [id(3)])
          assert.deepStrictEqual([...(yield* a.manager.validators)], [id(3)])
          const left = Option.getOrThrow(yield* a.registry.get(id(2)))
          assert.isFalse(left.validator)
          assert.strictEqual(left.connection, "disconnected")
          // Node 2 still counts node 1 as a validator and keeps dialling it: refused each time.
          yield* TestClock.adjust("30 seconds")
          assert.deepStrictEqual(yield* a.manager.connected, [id(3)])
          assert.deepStrictEqual(yield* b.manager.connected, [])
          assert.deepStrictEqual(yield* c.manager.connected, [id(1)])
          // And back: node 2 rejoins.
          yield* a.manager.setValidators(validators([1, 2, 3]))
          yield* TestClock.adjust("35 seconds")
          assert.deepStrictEqual([...(yield* a.manager.connected)].sort(), [id(2), id(3)].sort())
        })
      )
  )

  it.scoped(
    "connectTo a peer whose key is not known: the proven key is returned and kept, never redialled after disconnect",
    () =>
      withNetwork(
        {},
        Effect.gen(function* () {
          // Node 9 is no validator of node 1's; node 9 admits anyone (a bootstrap node).
          const a = yield* startNode(1, [1])
          yield* startNode(9, [9], { admitNonValidators: true })
          const peer = yield* a.manager.connectTo(address(9), (key) => key !== id(1))
          assert.strictEqual(peer, id(9))
          yield* TestClock.adjust("10 seconds")
          // Heartbeats keep it; it is not cut as a non-validator.
          assert.deepStrictEqual(yield* a.manager.connected, [id(9)])
          yield* a.manager.disconnect(peer, "enough-peers")
          yield* TestClock.adjust("30 seconds")
          assert.deepStrictEqual(yield* a.manager.connected, [])
          // A predicate that refuses every key: an identity-mismatch dial error.
          const error = yield* Effect.flip(a.manager.connectTo(address(9), () => false))
          assert.strictEqual(error._tag, "DialError")
        })
      )
  )

  it.scoped("a validator with no address known: its dialer waits for one, then dials at once", () =>
    withNetwork(
      {},
      Effect.gen(function* () {
        const set = [
          { id: id(1), addresses: [address(1)] },
          { id: id(2), addresses: [] }
        ]
        const a = yield* startNode(1, [1, 2], {}, set)
        // Node 2 does not know node 1's address either: only node 1 can dial.
        yield* startNode(2, [1, 2], {}, [
          { id: id(1), addresses: [] },
          { id: id(2), addresses: [address(2)] }
        ])
        // A minute with nowhere to dial: a backoff would have grown to its 30 s cap by now.
        yield* TestClock.adjust("60 seconds")
        assert.deepStrictEqual(yield* a.manager.connected, [])
        // Discovery finds it: the dialer goes at once, not at its next backoff.
        yield* a.registry.addAddress(id(2), address(2), "gossip")
        yield* TestClock.adjust("100 millis")
        assert.deepStrictEqual(yield* a.manager.connected, [id(2)])
      })
    )
  )
})
