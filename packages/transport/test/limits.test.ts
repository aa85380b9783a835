// `maxInboundConnections` on the real TLS and TCP listeners on 127.0.0.1: authenticated inbound
// connections past the limit are refused as `over-limit`, and a place is free again once one closes.
import { assert, describe, it } from "@effect/vitest"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Stream from "effect/Stream"
import { TcpTransport, TlsTransport, type Transport, TransportConfig } from "../src/index.js"
import { accept, receiver } from "./fixtures/conformance.js"
import { buildTransport, type Harness } from "./fixtures/harness.js"
import { identity } from "./fixtures/identities.js"

const harnesses: ReadonlyArray<Harness> = [
  {
    name: "TLS",
    clock: "live",
    layer: (id, c) => TlsTransport.layer({ identity: id, config: c }),
    listenAddress: () => "127.0.0.1:0",
    provide: (e) => e
  },
  {
    name: "TCP",
    clock: "live",
    layer: (id, c) => TcpTransport.layer({ identity: id, config: c, allowUnencrypted: true }),
    listenAddress: () => "127.0.0.1:0",
    provide: (e) => e
  }
]

/** Only a guard against a hang, under the test timeout: refusals over the limit come at once. */
const DEADLINE = Duration.seconds(20)

const nextRefusal = (listener: Transport.Listener) =>
  Stream.runHead(listener.refusals).pipe(
    Effect.flatMap((o) => (o._tag === "Some" ? Effect.succeed(o.value) : Effect.dieMessage("no refusal"))),
    Effect.timeoutFail({ duration: DEADLINE, onTimeout: () => new Error("no refusal") })
  )

/** A check that a byte sent on `from` arrives on `to`: the connection is open and works. */
const worksCheck = (from: Transport.Connection, to: Transport.Connection) =>
  Effect.map(
    receiver(to),
    (r) => (byte: number) =>
      Effect.gen(function* () {
        yield* from.send(TransportConfig.Channel.consensus, [Uint8Array.of(byte)])
        const [frame] = yield* r.take(1)
        assert.strictEqual(frame!.messages[0]?.[0], byte, "the connection carries a message")
      })
  )

for (const harness of harnesses) {
  describe(`${harness.name} listener: maxInboundConnections`, () => {
    it.scopedLive(
      "refuses the (max+1)th authenticated inbound connection as over-limit, and accepts again after one closes",
      () =>
        Effect.gen(function* () {
          const server = yield* buildTransport(harness, identity(1), { maxInboundConnections: 2 })
          const listener = yield* server.listen(harness.listenAddress(1))
          const dialer = (n: number) => buildTransport(harness, identity(n))
          const [t2, t3, t4, t5] = yield* Effect.all([dialer(2), dialer(3), dialer(4), dialer(5)])
          const to = identity(1).peerId

          // Two authenticated connections: the limit is reached (each is accepted before the next dial).
          const c2 = yield* t2.dial(listener.address, to)
          const at2 = yield* accept(listener)
          const c3 = yield* t3.dial(listener.address, to)
          const at3 = yield* accept(listener)
          assert.deepStrictEqual([at2.remotePeer, at3.remotePeer], [identity(2).peerId, identity(3).peerId])
          const works2 = yield* worksCheck(c2, at2)
          const works3 = yield* worksCheck(c3, at3)

          // The third is refused, on both sides; the two others are not disturbed.
          const refused = yield* Effect.either(t4.dial(listener.address, to))
          assert.isTrue(Either.isLeft(refused), "the dial past the limit fails")
          const refusal = yield* nextRefusal(listener)
          assert.strictEqual(refusal.reason, "over-limit")
          assert.match(refusal.detail, /2 inbound connections \(max 2\)/)
          yield* works2(2)
          yield* works3(3)

          // One closes (the listener's end is closed once `closed` resolves there): a place is free.
          yield* c2.close({ reason: "bye" })
          assert.strictEqual((yield* at2.closed).initiator, "remote")
          const c4 = yield* t4.dial(listener.address, to)
          const at4 = yield* accept(listener)
          assert.strictEqual(at4.remotePeer, identity(4).peerId)
          yield* (yield* worksCheck(c4, at4))(4)

          // Full again: the next one is refused in turn.
          assert.isTrue(Either.isLeft(yield* Effect.either(t5.dial(listener.address, to))))
          const again = yield* nextRefusal(listener)
          assert.strictEqual(again.reason, "over-limit")
          yield* works3(5)
        })
    )

    it.scopedLive("holds the limit when handshakes run side by side: four at once with max 2 give two", () =>
      Effect.gen(function* () {
        const server = yield* buildTransport(harness, identity(1), { maxInboundConnections: 2 })
        const listener = yield* server.listen(harness.listenAddress(1))
        const dialers = yield* Effect.all([2, 3, 4, 5].map((n) => buildTransport(harness, identity(n))))
        const to = identity(1).peerId
        // All four dial at once: each attempt finds no inbound connection yet when it arrives.
        const dialed = yield* Effect.all(
          dialers.map((t) => Effect.either(t.dial(listener.address, to))),
          { concurrency: "unbounded" }
        )
        const accepted = [yield* accept(listener), yield* accept(listener)]
        // The two past the limit are refused before their handshake ends, or told why once it has.
        const closings = yield* Effect.forEach(dialed, (d) =>
          Either.isLeft(d) ? Effect.succeed(undefined) : Effect.fork(d.right.closed)
        )
        const deadline = Date.now() + Duration.toMillis(DEADLINE)
        let turnedAway = 0
        for (;;) {
          turnedAway = 0
          for (const closing of closings) {
            if (closing === undefined) turnedAway++
            else {
              const done = yield* Fiber.poll(closing)
              if (
                done._tag === "Some" &&
                Exit.isSuccess(done.value) &&
                done.value.value.reason === "over-limit"
              )
                turnedAway++
            }
          }
          if (turnedAway >= 2 || Date.now() > deadline) break
          yield* Effect.sleep("20 millis")
        }
        assert.strictEqual(turnedAway, 2, "two of the four turned away")
        assert.strictEqual((yield* listener.refused)["over-limit"], 2)
        // The two accepted still work.
        for (const [i, at] of accepted.entries()) {
          const mine = dialed.find((d) => Either.isRight(d) && d.right.localPeer === at.remotePeer)
          assert.isDefined(mine)
          if (mine !== undefined && Either.isRight(mine)) yield* (yield* worksCheck(mine.right, at))(10 + i)
        }
      })
    )
  })
}
