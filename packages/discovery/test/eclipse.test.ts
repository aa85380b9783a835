// Eclipse resistance under TestClock on the simulated network: a connected peer floods a node that
// admits non-validators with valid records from hundreds of fresh keys. The operator's addresses
// (config, bootstrap) are never pushed out, no subnet holds more than its cap, the book holds no more
// than its cap, and the validator set does not grow: gossip cannot make a validator.
import { assert, describe, it } from "@effect/vitest"
import { TransportConfig } from "@hotstuff2/transport"
import { Codec, Identity, Message } from "@hotstuff2/wire"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Option from "effect/Option"
import * as Queue from "effect/Queue"
import * as Stream from "effect/Stream"
import * as TestClock from "effect/TestClock"
import { sign } from "../src/internal/record.js"
import { address, id, NETWORK, startNode, startRaw, withNetwork } from "./fixtures/cluster.js"

const { discovery } = TransportConfig.Channel

/** A fresh attacker key, `k`-th of the flood. */
const attackerKey = (k: number) => {
  const seed = new Uint8Array(32)
  new DataView(seed.buffer).setUint32(0, 900_000 + k)
  return Either.getOrThrow(Identity.fromSeed(seed))
}

describe("eclipse resistance", () => {
  it.scoped(
    "a flood of valid records from attacker keys: operator addresses stay, per-subnet and book caps hold, no validator is made",
    () =>
      withNetwork(
        {},
        Effect.gen(function* () {
          const set = [
            { id: id(1), addresses: [address(1)] },
            { id: id(2), addresses: [address(2)] },
            { id: id(3), addresses: [address(3)] },
            // Nobody knows where 4 is: the node keeps asking its bootstrap node.
            { id: id(4), addresses: [] }
          ]
          const node = yield* startNode({
            n: 1,
            validators: set,
            peers: { admitNonValidators: true, maxAddressesPerPeer: 4 },
            discovery: {
              bootstrap: [{ address: address(9) }],
              bootstrapLeaveAt: 1,
              maxNonValidatorRecords: 40,
              maxNonValidatorsPerSubnet: 4
            }
          })
          // The attacker is a validator (connected); node 9 is a bootstrap node that admits anyone.
          const attacker = yield* startRaw({ n: 2, validators: set })
          yield* startRaw({ n: 9, validators: [], peers: { admitNonValidators: true } })
          yield* TestClock.adjust("5 seconds")
          const sourcesOf = (n: number) =>
            Effect.map(node.registry.get(id(n)), (s) =>
              Option.getOrThrow(s).addresses.map((a) => [a.address, a.source] as const)
            )
          const before3 = yield* sourcesOf(3)
          const before9 = yield* sourcesOf(9)
          assert.deepStrictEqual(before3, [[address(3), "config"]])
          assert.deepStrictEqual(before9, [[address(9), "bootstrap"]])

          // 200 records from fresh keys in one /16, then 100 from 100 different /16s, then 20 that also
          // list validator 3's and node 9's addresses, to crowd them out.
          const records: Array<Message.PeerRecord> = []
          for (let k = 0; k < 320; k++) {
            const subnet = k < 200 ? "10.1" : `10.${10 + k - 200}`
            const addresses = [`${subnet}.${k % 250}.1:9000`, ...(k >= 300 ? [address(3), address(9)] : [])]
            records.push(Either.getOrThrow(sign(attackerKey(k), NETWORK, addresses, 1000n, 0n)))
          }
          // Every request node 1 sends the attacker (on connecting, then in its gossip rounds) gets 50 of
          // them back: replies nobody asked for would be refused unread.
          const requests = yield* Queue.unbounded<void>()
          yield* Effect.forkScoped(
            Stream.runForEach(attacker.manager.inboundOn(discovery), (frame) =>
              Effect.forEach(
                frame.messages,
                (bytes) =>
                  Either.getOrThrow(Codec.decode(bytes))._tag === "PeerExchangeRequest"
                    ? Queue.offer(requests, undefined)
                    : Effect.void,
                { discard: true }
              )
            )
          )
          let sent = 0
          for (let round = 0; round < 200 && sent < records.length; round++) {
            yield* TestClock.adjust("1 second")
            while (sent < records.length && Option.isSome(yield* Queue.poll(requests))) {
              const reply = Message.PeerExchangeResponse.make({ records: records.slice(sent, sent + 50) })
              yield* attacker.manager.send(id(1), discovery, [Either.getOrThrow(Codec.encode(reply))])
              sent = Math.min(records.length, sent + 50)
            }
          }
          yield* TestClock.adjust("1 second")
          assert.strictEqual(sent, records.length, "every record was sent in a reply")
          const stats = yield* node.discovery.stats
          // 4 of 10.1/16 (196 not kept) and 4 of the 20 that name validator 3's and node 9's hosts (a
          // name counts as a subnet: 16 not kept); a full book makes room by forgetting the oldest
          // record of a peer not connected (none of these is), never past 40.
          assert.strictEqual(stats.recordsRefused["not-kept"], 196 + 16)
          assert.strictEqual(stats.records, 40)
          const held = (yield* node.discovery.records).filter((r) => r.peer !== id(3))
          const subnets = new Map<string, number>()
          for (const r of held) {
            const subnet = r.addresses[0]!.split(".").slice(0, 2).join(".")
            subnets.set(subnet, (subnets.get(subnet) ?? 0) + 1)
          }
          assert.isAtMost(Math.max(...subnets.values()), 4)
          // The operator's addresses are untouched, and nobody became a validator.
          assert.deepStrictEqual(yield* sourcesOf(3), before3)
          assert.deepStrictEqual(yield* sourcesOf(9), before9)
          assert.deepStrictEqual([...(yield* node.manager.validators)].sort(), [id(2), id(3), id(4)].sort())
          const attackers = (yield* node.registry.all).filter(
            (s) => s.validator && ![id(2), id(3), id(4)].includes(s.id)
          )
          assert.deepStrictEqual(attackers, [])
        })
      )
  )
})
