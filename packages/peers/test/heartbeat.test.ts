// Heartbeats tell a slow peer from a dead one: a peer whose application stops reading cannot answer
// pings (its reader waits, its socket pauses), but its own ticker keeps pinging, and that is heard.
// A peer this node hears nothing from is still taken out of service within `missedHeartbeats`
// intervals. The heartbeat channel also carries reliable delivery's `Ack`, handed to `onAck`.
import { assert, describe, it } from "@effect/vitest"
import { MemoryTransport, SimulatedNetwork, TransportConfig } from "@hotstuff2/transport"
import { Codec, type Message } from "@hotstuff2/wire"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Option from "effect/Option"
import * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import * as TestClock from "effect/TestClock"
import type { PeerManager, PeerRegistry, PeersConfig } from "../src/index.js"
import {
  address,
  buildNode,
  disconnections,
  host,
  identity,
  NETWORK,
  startNode,
  validators,
  withNetwork
} from "./fixtures/cluster.js"

const { consensus, heartbeat } = TransportConfig.Channel
const A = () => identity(1).peerId
const B = () => identity(2).peerId

/**
 * Node `n` of {1, 2} with small buffers, so that a consumer that stops reading pauses the socket
 * and fills the sender's queue within a second: 16 frames in the inbox, 32 in the connection, 256
 * queued per peer on the consensus channel.
 */
const startSmall = (n: number, onAck?: (peer: PeerManager.PeerId, ack: Message.Ack) => void) =>
  Effect.flatMap(Scope.make(), (scope) =>
    buildNode(
      {
        n,
        listen: address(n),
        validators: validators([1, 2]),
        config: { inboundFramesPerPeer: 16 } satisfies PeersConfig.PeersConfigInput,
        transport: MemoryTransport.layer({
          identity: identity(n),
          config: {
            networkId: NETWORK,
            maxInboundFrames: 32,
            channels: TransportConfig.defaultChannels.map((c) =>
              c.id === consensus ? { ...c, maxQueuedFrames: 256 } : c
            )
          }
        }),
        ...(onAck === undefined ? {} : { onAck })
      },
      scope
    )
  )

/** A 1 KiB message carrying `seq` in its first four bytes. */
const numbered = (seq: number) => {
  const bytes = new Uint8Array(1024)
  new DataView(bytes.buffer).setUint32(0, seq)
  return bytes
}
const seqOf = (bytes: Uint8Array) => new DataView(bytes.buffer, bytes.byteOffset).getUint32(0)

const score = (registry: PeerRegistry.PeerRegistryShape, peer: PeerManager.PeerId) =>
  Effect.map(registry.get(peer), (state) => Option.getOrThrow(state).score)

describe("PeerManager heartbeats: slow is not dead", () => {
  it.scoped(
    "a peer whose consumer stops reading for 10 s is not disconnected: the sender sees Backpressure, then every accepted frame arrives in order",
    () =>
      withNetwork(
        { sendBufferBytes: 64 * 1024 },
        Effect.gen(function* () {
          const a = yield* startSmall(1)
          const b = yield* startSmall(2)
          yield* TestClock.adjust("500 millis")
          assert.deepStrictEqual(yield* a.manager.connected, [B()])
          assert.deepStrictEqual(yield* b.manager.connected, [A()])
          const dropsA = yield* disconnections(a.registry)
          const dropsB = yield* disconnections(b.registry)

          // B's application reads through a gate; closed, it takes nothing.
          const gate = yield* Effect.makeLatch(true)
          const received: Array<number> = []
          yield* b.manager.inbound.pipe(
            Stream.runForEach((frame) =>
              Effect.zipRight(
                gate.await,
                Effect.sync(() => {
                  for (const m of frame.messages) received.push(seqOf(m))
                })
              )
            ),
            Effect.forkScoped
          )

          // A sends 50 frames every 100 ms for 12 s; B stops reading from 1 s to 11 s.
          const accepted: Array<number> = []
          let backpressure = 0
          let paused = false
          let seq = 0
          for (let step = 0; step < 120; step++) {
            if (step === 10) yield* gate.close
            if (step === 110) yield* gate.open
            for (let i = 0; i < 50; i++, seq++) {
              const error = a.manager.unsafeSend(B(), consensus, [numbered(seq)])
              if (error === undefined) accepted.push(seq)
              else if (error._tag === "Backpressure") backpressure++
              else assert.fail(`send ${seq} failed with ${error._tag} at step ${step}`)
            }
            yield* TestClock.adjust("100 millis")
            const toA = yield* b.manager.connection(A())
            if (Option.isSome(toA) && (yield* toA.value.stats).readPaused) paused = true
          }
          // B reads the backlog.
          for (let i = 0; i < 50 && received.length < accepted.length; i++)
            yield* TestClock.adjust("100 millis")

          assert.isTrue(paused, "B's socket from A paused while B's consumer did not read")
          assert.isAbove(backpressure, 0, "A's sends met Backpressure")
          assert.deepStrictEqual(dropsA, [], "A kept B")
          assert.deepStrictEqual(dropsB, [], "B kept A")
          assert.deepStrictEqual(yield* a.manager.connected, [B()])
          assert.strictEqual(received.length, accepted.length)
          assert.deepStrictEqual(received, accepted, "every accepted frame arrived, in order")
          assert.strictEqual(yield* score(a.registry, B()), 0, "B was not charged a Timeout")
        })
      )
  )

  it.scoped(
    "a peer that goes silent both ways is still detached as unhealthy within missedHeartbeats intervals",
    () =>
      withNetwork(
        {},
        Effect.gen(function* () {
          const network = yield* SimulatedNetwork.SimulatedNetwork
          // Both at the defaults (1 s, 3 missed), unlike the older test where one side is patient.
          const a = yield* startNode(1, [1, 2])
          const b = yield* startNode(2, [1, 2])
          yield* TestClock.adjust("500 millis")
          assert.deepStrictEqual(yield* a.manager.connected, [B()])
          yield* TestClock.adjust("2500 millis") // heartbeats flowing both ways
          const dropsA = yield* disconnections(a.registry)
          const dropsB = yield* disconnections(b.registry)

          yield* network.partition([[host(1)], [host(2)]])
          yield* TestClock.adjust("2500 millis")
          assert.deepStrictEqual([dropsA, dropsB], [[], []], "still connected 2.5 intervals into the silence")
          yield* TestClock.adjust("1500 millis")
          assert.strictEqual(dropsA.length, 1)
          assert.match(dropsA[0]!, /unhealthy/)
          assert.strictEqual(dropsB.length, 1)
          assert.match(dropsB[0]!, /unhealthy/)
          assert.deepStrictEqual(yield* a.manager.connected, [])
          assert.deepStrictEqual(yield* b.manager.connected, [])
        })
      )
  )

  it.scoped(
    "a peer whose frames stop arriving is detached though it still hears us: only what arrives counts",
    () =>
      withNetwork(
        {},
        Effect.gen(function* () {
          const network = yield* SimulatedNetwork.SimulatedNetwork
          const a = yield* startNode(1, [1, 2], { redialCap: 60_000 })
          const b = yield* startNode(2, [1, 2], { redialCap: 60_000 })
          yield* TestClock.adjust("3 seconds")
          assert.deepStrictEqual(yield* a.manager.connected, [B()])
          const dropsA = yield* disconnections(a.registry)
          const dropsB = yield* disconnections(b.registry)

          // Everything B writes to A is lost (its pings and pongs too); A's frames still reach B.
          yield* network.setLink(host(2), host(1), { loss: 1 })
          yield* TestClock.adjust("2500 millis")
          assert.deepStrictEqual(dropsA, [], "still connected 2.5 intervals into the silence")
          yield* TestClock.adjust("1500 millis")
          assert.strictEqual(dropsA.length, 1)
          assert.match(dropsA[0]!, /local: unhealthy/)
          // B heard A all along: the close is A's, not B's.
          assert.isTrue(
            dropsB.every((reason) => /^remote/.test(reason)),
            `B: ${dropsB}`
          )
        })
      )
  )
})

describe("PeerManager heartbeat channel: reliable delivery's Ack", () => {
  const ack: Message.Ack = {
    _tag: "Ack",
    incarnation: 7n,
    cumulative: 41n,
    ranges: [
      { first: 43n, last: 45n },
      { first: 50n, last: 50n }
    ]
  }
  const encoded = (message: Message.Message) => Either.getOrThrow(Codec.encode(message))

  it.scoped(
    "an Ack a peer sends on channel 0 with unsafeSend reaches onAck; a malformed or foreign message there is still reported",
    () =>
      withNetwork(
        {},
        Effect.gen(function* () {
          const acks: Array<readonly [PeerManager.PeerId, Message.Ack]> = []
          const a = yield* startSmall(1, (peer, received) => acks.push([peer, received]))
          const b = yield* startSmall(2)
          yield* TestClock.adjust("500 millis")
          assert.deepStrictEqual(yield* b.manager.connected, [A()])

          // Queued on the heartbeat channel like any send; taken by A's heartbeat handler.
          assert.isUndefined(b.manager.unsafeSend(A(), heartbeat, [encoded(ack)]))
          yield* b.manager.send(A(), heartbeat, [encoded({ ...ack, cumulative: 42n, ranges: [] })])
          yield* TestClock.adjust("10 millis")
          assert.deepStrictEqual(acks, [
            [B(), ack],
            [B(), { ...ack, cumulative: 42n, ranges: [] }]
          ])
          assert.strictEqual(yield* score(a.registry, B()), 0, "an Ack costs the peer nothing")

          // Bytes that do not decode: InvalidMessage (-20); a message that has no business on the
          // heartbeat channel: ProtocolViolation (-30). Neither reaches onAck or the inbox.
          assert.isUndefined(b.manager.unsafeSend(A(), heartbeat, [Uint8Array.of(0x22, 0xff)]))
          yield* TestClock.adjust("10 millis")
          assert.approximately(yield* score(a.registry, B()), -20, 0.01)
          const app = encoded({ _tag: "AppMessage", topic: "t", data: Uint8Array.of(1) })
          assert.isUndefined(b.manager.unsafeSend(A(), heartbeat, [app]))
          yield* TestClock.adjust("10 millis")
          assert.approximately(yield* score(a.registry, B()), -50, 0.01)
          assert.strictEqual(acks.length, 2)
          assert.deepStrictEqual(a.manager.unsafePoll(10), [])
          assert.deepStrictEqual(yield* a.manager.connected, [B()])
        })
      )
  )

  it.scoped("without onAck an Ack is ignored, not reported", () =>
    withNetwork(
      {},
      Effect.gen(function* () {
        const a = yield* startSmall(1)
        const b = yield* startSmall(2)
        yield* TestClock.adjust("500 millis")
        assert.isUndefined(b.manager.unsafeSend(A(), heartbeat, [encoded(ack)]))
        yield* TestClock.adjust("10 millis")
        assert.strictEqual(yield* score(a.registry, B()), 0, "one Ack costs nothing")
        // Many more (ten violations would have banned B): still nothing.
        for (let i = 0; i < 10; i++) assert.isUndefined(b.manager.unsafeSend(A(), heartbeat, [encoded(ack)]))
        yield* TestClock.adjust("10 millis")
        const state = Option.getOrThrow(yield* a.registry.get(B()))
        assert.strictEqual(state.score, 0)
        assert.isTrue(Option.isNone(state.ban))
        assert.deepStrictEqual(a.manager.unsafePoll(10), [])
        assert.deepStrictEqual(yield* a.manager.connected, [B()])
      })
    )
  )
})
