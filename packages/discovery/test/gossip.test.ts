// Gossip's bad input under TestClock on the simulated network: a connected validator that sends the
// discovery channel garbage, other message types, forged, replayed, wrong-network, future-dated and
// undialable records, oversized replies and a flood of requests. Each is refused with its typed
// reason, counted, and charged where it shows bad faith; what was known stays known.
import { assert, describe, it } from "@effect/vitest"
import type { PeerRegistry } from "@hotstuff2/peers"
import { TransportConfig } from "@hotstuff2/transport"
import { Codec, Message } from "@hotstuff2/wire"
import * as Chunk from "effect/Chunk"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Fiber from "effect/Fiber"
import * as Option from "effect/Option"
import * as Stream from "effect/Stream"
import * as TestClock from "effect/TestClock"
import { sign } from "../src/internal/record.js"
import { address, id, identity, NETWORK, startNode, startRaw, withNetwork } from "./fixtures/cluster.js"

const { discovery } = TransportConfig.Channel
const encode = (m: Message.Message) => Either.getOrThrow(Codec.encode(m))
const record = (n: number, addresses: ReadonlyArray<string>, sequence: bigint, network = NETWORK) =>
  Either.getOrThrow(sign(identity(n), network, addresses, sequence, 0n))

/** Every event costs 1: the attacker is never banned while the test goes on, and each charge is seen. */
const weights = {
  InvalidMessage: -1,
  BadSignature: -1,
  RateLimitExceeded: -1,
  Timeout: -1,
  ProtocolViolation: -1,
  UsefulMessage: 0
}

describe("gossip refuses bad input", () => {
  it.scoped(
    "each kind of bad record or message: typed reason, counted, charged where it shows bad faith; nothing known is lost",
    () =>
      withNetwork(
        {},
        Effect.gen(function* () {
          // Validators 1 (under test), 2 (the attacker: a validator, so connected) and 3 (offline).
          const set = [
            { id: id(1), addresses: [address(1)] },
            { id: id(2), addresses: [address(2)] },
            { id: id(3), addresses: [] }
          ]
          // 10 pushes and requests a peer may send per interval (this test pushes 9); no gossip rounds:
          // node 1 asks the attacker once, on connecting.
          const node = yield* startNode({
            n: 1,
            validators: set,
            peers: { weights },
            discovery: { requestsPerInterval: 10, gossip: false }
          })
          const attacker = yield* startRaw({ n: 2, validators: set })
          const charges: Array<string> = []
          yield* Effect.forkScoped(
            Stream.runForEach(node.registry.changes, (e: PeerRegistry.PeerEvent) =>
              Effect.sync(() => {
                if (e._tag === "ScoreChanged" && e.peer === id(2)) charges.push(e.event)
              })
            )
          )
          yield* TestClock.adjust("5 seconds")
          assert.deepStrictEqual(yield* node.manager.connected, [id(2)])
          const send = (messages: ReadonlyArray<Uint8Array>) =>
            Effect.zipRight(attacker.manager.send(id(1), discovery, messages), TestClock.adjust("10 millis"))
          const stats = () => node.discovery.stats

          // A genuine record of validator 3: learned.
          yield* send([encode(record(3, [address(3)], 1000n))])
          assert.strictEqual((yield* stats()).recordsAccepted, 1)
          const addressesOf3 = () =>
            Effect.map(node.registry.get(id(3)), (s) => Option.getOrThrow(s).addresses.map((a) => a.address))
          assert.deepStrictEqual(yield* addressesOf3(), [address(3)])

          // Garbage, and a message of another channel's kind.
          yield* send([Uint8Array.of(0xff, 1, 2, 3)])
          yield* send([encode(Message.Ping.make({ nonce: 1n }))])
          // The same record again (a replay): stale, not charged.
          yield* send([encode(record(3, [address(3)], 1000n))])
          // A newer record of 3 whose address was changed after signing: bad signature.
          const forged = { ...record(3, [address(3)], 2000n), addresses: ["evil:9000"] }
          yield* send([encode(forged)])
          // Signed by 3, for another network.
          yield* send([encode(record(3, ["elsewhere:9000"], 3000n, "another-network"))])
          // Signed an hour ahead of this node's clock: by 3 and relayed (not the relay's fault), and by
          // the sender itself (its fault).
          yield* send([encode(record(3, [address(3)], BigInt(60 * 60 * 1000)))])
          yield* send([encode(record(2, [address(2)], BigInt(60 * 60 * 1000)))])
          // Node 1's own (old) record, replayed to it.
          yield* send([encode(record(1, ["stale:9000"], 5n))])
          // Nothing in it may be dialled: loopback (not allowed here), multicast, unspecified.
          yield* send([encode(record(3, ["127.0.0.1:9000", "224.0.0.1:9000", "0.0.0.0:9000"], 4000n))])
          // A reply (node 1 asked on connecting: 3 had no address) with more records than any request
          // asks for (64 by default): the first 64 are read.
          const many = Array.from({ length: 100 }, () => record(3, [address(3)], 1000n))
          yield* send([encode(Message.PeerExchangeResponse.make({ records: many }))])
          // The same reply again: nobody asked for it, so none of it is read.
          yield* send([encode(Message.PeerExchangeResponse.make({ records: many.slice(0, 10) }))])

          const s = yield* stats()
          assert.deepStrictEqual(s.recordsRefused, {
            stale: 1 + 64,
            "bad-signature": 1,
            "wrong-network": 1,
            future: 2,
            "own-record": 1,
            "bad-address": 1
          })
          assert.strictEqual(s.recordsAccepted, 1)
          assert.strictEqual(s.violations, 4)
          // Charged: garbage, the Ping, the forgery, the wrong network, its own future date, the
          // oversized reply, the reply nobody asked for; not the replays, the own record, the
          // undialable one or 3's future date (honest relays send those).
          assert.deepStrictEqual([...charges].sort(), [
            "BadSignature",
            "InvalidMessage",
            "InvalidMessage",
            "ProtocolViolation",
            "ProtocolViolation",
            "ProtocolViolation",
            "ProtocolViolation"
          ])
          // What was known is still known, from gossip, unchanged.
          assert.deepStrictEqual(yield* addressesOf3(), [address(3)])

          // A flood of exchange requests in the next interval: 10 answered, the rest refused, charged once.
          yield* TestClock.adjust("5 seconds")
          charges.length = 0
          const request = encode(
            Message.PeerExchangeRequest.make({ max: 64, epoch: 0n, connected: new Uint8Array(0) })
          )
          const replies = yield* Effect.fork(
            Stream.runCollect(
              attacker.manager.inboundOn(discovery).pipe(
                Stream.mapConcat((f) =>
                  f.messages.map((bytes) => Either.getOrThrow(Codec.decode(bytes))._tag)
                ),
                Stream.filter((tag) => tag === "PeerExchangeResponse"),
                Stream.take(10)
              )
            )
          )
          for (let i = 0; i < 25; i++) yield* send([request])
          const after = yield* stats()
          assert.strictEqual(after.requestsAnswered, 10)
          assert.strictEqual(after.requestsRefused, 15)
          assert.deepStrictEqual(charges, ["RateLimitExceeded"])
          yield* TestClock.adjust("100 millis")
          assert.strictEqual(Chunk.size(yield* Fiber.join(replies)), 10)
          // Still connected: refused input costs reputation, it does not cut an honest-looking peer at once.
          assert.deepStrictEqual(yield* node.manager.connected, [id(2)])
        })
      )
  )
})
