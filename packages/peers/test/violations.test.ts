// An authenticated peer that breaks the protocol (a frame on a channel this node does not have, a
// frame over its size limit) is told why in a goodbye, is charged for it, and is banned when it
// reconnects and repeats; what it sent before the violation is still delivered. Its refused dials
// after the ban show as `Refused` peer events and in the listener's counts.
import { assert, describe, it } from "@effect/vitest"
import { MemoryTransport, Transport, TransportConfig } from "@hotstuff2/transport"
import * as Chunk from "effect/Chunk"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import * as TestClock from "effect/TestClock"
import type { PeerRegistry } from "../src/index.js"
import { address, buildNode, identity, NETWORK, validators, withNetwork } from "./fixtures/cluster.js"

const { consensus } = TransportConfig.Channel
/** A channel the victim does not have. */
const STRAY = 42

/**
 * A validator's transport whose config differs from the victim's: one channel more, and frames of
 * up to 4 MiB where the victim takes 1 MiB. Its own checks let it send what the victim refuses.
 */
const attackerTransport = Effect.map(
  Layer.build(
    MemoryTransport.layer({
      identity: identity(2),
      config: {
        networkId: NETWORK,
        maxFrameBytes: 4 * 1024 * 1024,
        channels: [
          ...TransportConfig.defaultChannels,
          { ...TransportConfig.defaultChannels[1]!, id: STRAY, name: "stray" }
        ]
      }
    })
  ),
  (context) => Context.get(context, Transport.Transport)
)

/** The victim: validator 1 of {1, 2}, taking frames of up to 1 MiB. */
const startVictim = Effect.flatMap(Scope.make(), (scope) =>
  buildNode(
    {
      n: 1,
      listen: address(1),
      validators: validators([1, 2]),
      config: {},
      transport: MemoryTransport.layer({
        identity: identity(1),
        config: { networkId: NETWORK, maxFrameBytes: 1024 * 1024 }
      })
    },
    scope
  )
)

/** Runs `effect`, moving the TestClock 10 ms at a time until it is done (at most 10 s). */
const settle = <A, E>(effect: Effect.Effect<A, E>) =>
  Effect.gen(function* () {
    const fiber = yield* Effect.fork(effect)
    for (let i = 0; i < 1000; i++) {
      const done = yield* Fiber.poll(fiber)
      if (done._tag === "Some") return yield* done.value
      yield* TestClock.adjust("10 millis")
    }
    return yield* Effect.dieMessage("not done within 10 s of clock time")
  })

describe("protocol violations by an authenticated peer", () => {
  it.scoped(
    "are answered with a goodbye naming the wire error, charged to the peer, and end in a ban on repeat",
    () =>
      withNetwork(
        {},
        Effect.gen(function* () {
          const victim = yield* startVictim
          const attacker = yield* attackerTransport
          const seen: Array<PeerRegistry.PeerEvent> = []
          yield* Effect.forkScoped(
            Stream.runForEach(victim.registry.changes, (e) => Effect.sync(() => seen.push(e)))
          )
          yield* TestClock.adjust("1 millis")

          // First: a valid message, then a frame on a channel the victim does not have.
          const first = yield* settle(attacker.dial(address(1), identity(1).peerId))
          const inbound = yield* Effect.fork(Stream.runCollect(Stream.take(victim.manager.inbound, 1)))
          yield* first.send(consensus, [new Uint8Array([7, 7, 7])])
          yield* first.send(STRAY, [new Uint8Array([1])])
          const why = yield* settle(first.closed)
          assert.strictEqual(why.initiator, "remote", "the victim closed it")
          assert.strictEqual(why.reason, "protocol-error")
          assert.match(why.detail, /unknown channel 42/)
          const delivered = Chunk.toReadonlyArray(yield* settle(Fiber.join(inbound)))
          assert.deepStrictEqual(
            [...delivered[0]!.messages[0]!],
            [7, 7, 7],
            "what came before the violation is delivered"
          )
          const state = yield* victim.registry.get(identity(2).peerId)
          assert.isTrue(state._tag === "Some" && state.value.score < 0, "the violation cost reputation")

          // Then: a frame over the victim's size limit, on the next connection, and so on: the
          // default weights (-30 per violation, threshold -100) ban on the fourth.
          let refusedAt: number | undefined
          for (let round = 2; round <= 5; round++) {
            const dialed = yield* settle(Effect.either(attacker.dial(address(1), identity(1).peerId)))
            if (Either.isLeft(dialed)) {
              refusedAt = round
              assert.strictEqual(dialed.left.reason, "refused-by-remote")
              assert.match(dialed.left.detail, /not-admitted/)
              break
            }
            yield* dialed.right.send(consensus, [new Uint8Array(2 * 1024 * 1024)])
            const closed = yield* settle(dialed.right.closed)
            assert.strictEqual(closed.reason, "protocol-error")
            assert.match(closed.detail, /FrameTooLarge/)
          }
          assert.strictEqual(refusedAt, 5, "banned after four violations, refused at the fifth dial")
          const banned = yield* victim.registry.get(identity(2).peerId)
          assert.isTrue(banned._tag === "Some" && banned.value.ban._tag === "Some")
          if (banned._tag === "Some" && banned.value.ban._tag === "Some") {
            assert.match(banned.value.ban.value.reason, /ProtocolViolation: FrameTooLarge/)
          }
          // The banned peer keeps dialling: each dial is refused, and the victim tells of it as a
          // `Refused` event at once, then at most once per `refusalEventInterval` (10 s) with the count.
          for (let i = 0; i < 3; i++) {
            assert.isTrue(
              Either.isLeft(yield* settle(Effect.either(attacker.dial(address(1), identity(1).peerId))))
            )
          }
          yield* TestClock.adjust("10 seconds")
          assert.isTrue(
            Either.isLeft(yield* settle(Effect.either(attacker.dial(address(1), identity(1).peerId))))
          )
          const refusedEvents = seen.filter((e) => e._tag === "Refused")
          assert.deepStrictEqual(
            refusedEvents.map((e) => (e._tag === "Refused" ? [e.peer, e.reason, e.count] : [])),
            [
              [identity(2).peerId, "not-admitted", 1],
              [identity(2).peerId, "not-admitted", 4]
            ]
          )
          assert.strictEqual((yield* victim.manager.refused)["not-admitted"], 5)

          const charged = seen.filter(
            (e): e is Extract<PeerRegistry.PeerEvent, { _tag: "ScoreChanged" }> =>
              e._tag === "ScoreChanged" && e.event === "ProtocolViolation"
          )
          assert.strictEqual(charged.length, 4)
          assert.match(charged[0]!.detail ?? "", /unknown channel 42/)
          assert.match(charged[3]!.detail ?? "", /FrameTooLarge/)
        })
      )
  )
})
