// A peer exchange between two nodes' real `Gossip` and `Book` (no transport): a reply leaves out the
// records of the validators the asker says it is connected to (when its epoch is the replier's), in
// a random order drawn from Effect's Random.
import { assert, describe, it } from "@effect/vitest"
import { Codec, type Identity, Message } from "@hotstuff2/wire"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Random from "effect/Random"
import * as DiscoveryConfig from "../src/DiscoveryConfig.js"
import { Book } from "../src/internal/book.js"
import { Gossip, type Port } from "../src/internal/gossip.js"
import { sign } from "../src/internal/record.js"
import { address, id, identity, NETWORK } from "./fixtures/cluster.js"

const config = Either.getOrThrow(DiscoveryConfig.decode({ recordHostNames: true }))
const validators = [1, 2, 3, 4, 5].map(id)
const order = [...validators].sort()

/** Node `n`'s gossip; what it sends goes to `sent`. */
const node = (n: number, sent: Array<Uint8Array>, epoch: bigint) => {
  const book = new Book(id(n), NETWORK, config, { allowLoopback: false, allowNames: true }, false)
  const port: Port = {
    send: (_peer, messages) => {
      sent.push(...messages)
    },
    connected: () => [],
    isValidator: (peer) => validators.includes(peer) && peer !== id(n),
    isConnected: () => false,
    missingAddresses: () => true,
    report: () => Effect.void,
    learned: () => Effect.void,
    refused: () => Effect.void,
    now: () => 10_000,
    hint: () => ({ epoch, connected: new Uint8Array(1) }),
    hinted: (asked, bitmap) =>
      new Set(asked === epoch ? order.filter((_, i) => ((bitmap[i >> 3] ?? 0) >> (i & 7)) & 1) : [])
  }
  const gossip = new Gossip(config, book, port, 30_000)
  gossip.setOwn(Either.getOrThrow(sign(identity(n), NETWORK, [address(n)], 1n, epoch)))
  return gossip
}

const encode = (m: Message.Message) => Either.getOrThrow(Codec.encode(m))
const bitmapOf = (peers: ReadonlyArray<Identity.PeerId>) => {
  const bitmap = new Uint8Array(1)
  for (const p of peers) bitmap[order.indexOf(p) >> 3]! |= 1 << (order.indexOf(p) & 7)
  return bitmap
}

/** Node 2 holding records of 3, 4 and 5 answers node 1's request; the peers its reply names. */
const exchange = (epoch: bigint, connected: ReadonlyArray<Identity.PeerId>) =>
  Effect.gen(function* () {
    const sent: Array<Uint8Array> = []
    const replier = node(2, sent, 0n)
    for (const n of [3, 4, 5]) {
      yield* replier.offer(Either.getOrThrow(sign(identity(n), NETWORK, [address(n)], 5n, 0n)), undefined)
    }
    const request = Message.PeerExchangeRequest.make({ max: 64, epoch, connected: bitmapOf(connected) })
    yield* replier.onFrame(id(1), [encode(request)])
    const reply = Either.getOrThrow(Codec.decode(sent[sent.length - 1]!))
    assert.strictEqual(reply._tag, "PeerExchangeResponse")
    return reply._tag === "PeerExchangeResponse" ? reply.records.map((r) => r.peer) : []
  })

describe("peer exchange", () => {
  it.effect(
    "a reply leaves out the validators the asker is connected to, and the replier when it is one",
    () =>
      Effect.gen(function* () {
        const named = yield* exchange(0n, [id(2), id(3)])
        assert.deepStrictEqual([...named].sort(), [id(4), id(5)].sort())
      }).pipe(Effect.withRandom(Random.make(1)))
  )

  it.effect("a bitmap of another epoch is ignored: the reply names every record held", () =>
    Effect.gen(function* () {
      const named = yield* exchange(7n, [id(2), id(3)])
      assert.deepStrictEqual([...named].sort(), [id(2), id(3), id(4), id(5)].sort())
    }).pipe(Effect.withRandom(Random.make(1)))
  )

  it.effect("the order of a reply is drawn from Random: another seed, another order", () =>
    Effect.gen(function* () {
      const orders = new Set<string>()
      for (let seed = 0; seed < 8; seed++) {
        orders.add((yield* Effect.withRandom(exchange(0n, []), Random.make(seed))).join())
      }
      assert.isAbove(orders.size, 1)
    })
  )
})
