// Bad input to the tree and routing paths, from "mallory": a validator whose node is not running
// but which holds a raw, authenticated connection to node 0 of a four-node cluster. Each crafted
// slot is refused with its reason and charged, or dropped and counted, and nothing else is lost.
import { assert, describe, it } from "@effect/vitest"
import { TransportConfig } from "@hotstuff2/transport"
import { Codec, Envelope, type Identity, Message } from "@hotstuff2/wire"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Payload from "../src/internal/payload.js"
import { encodeReceipt, encodeRouted, encodeTreeHeader } from "../src/internal/tree/header.js"
import {
  advance,
  awaitMesh,
  key,
  NETWORK,
  type Node,
  onNetwork,
  rawConnection,
  scoreOf,
  startCluster
} from "./fixtures/cluster.js"

const { Channel } = TransportConfig

const vote = (view: bigint, voter: Identity.PeerId) =>
  Message.Vote.make({ view, blockHash: new Uint8Array(32).fill(3), voter, signature: new Uint8Array(64) })

const sealed = (signer: Identity.Identity, sequence: bigint, kind: number, payload: Uint8Array) =>
  Payload.slot(
    kind,
    Either.getOrThrow(Envelope.seal(signer, { networkId: NETWORK, sequence, payload })).bytes
  )

const routedSlot = (signer: Identity.Identity, sequence: bigint, target: Identity.PeerId, view: bigint) =>
  sealed(
    signer,
    sequence,
    Payload.ROUTED,
    encodeRouted(target, Either.getOrThrow(Codec.encode(vote(view, signer.peerId))))
  )

/** Four running validators and mallory (the fifth, not running) connected to node 0. */
const setUp = Effect.gen(function* () {
  const { ids, nodes } = yield* startCluster({
    size: 5,
    absent: new Set([4]),
    broadcast: { strategy: "tree", fanout: 2 },
    peers: { heartbeatInterval: "1 hour" }
  })
  yield* awaitMesh(nodes)
  const mallory = ids[4]!
  const { write } = yield* rawConnection(mallory, ids[0]!)
  yield* advance(50)
  return { ids, nodes: nodes as ReadonlyArray<Node>, mallory, write }
})

describe("tree and routing bad input", () => {
  it.scoped(
    "a forged routed envelope is refused at the relay, charged to the sender, and goes no further",
    () =>
      onNetwork(
        { seed: 21 },
        Effect.gen(function* () {
          const { ids, nodes, mallory, write } = yield* setUp
          const forged = routedSlot(mallory, 1n, ids[1]!.peerId, 1n)
          forged[forged.length - 1]! ^= 1
          yield* write(Channel.consensus, [forged])
          yield* advance(100)
          assert.deepStrictEqual(
            nodes[0]!.counts.rejected.map((r) => [r.reason, r.peer]),
            [["bad-signature", mallory.peerId]]
          )
          assert.isBelow(yield* scoreOf(nodes[0]!, mallory.peerId), 0)
          assert.lengthOf(nodes[1]!.delivered, 0, "the target got nothing")
          assert.deepStrictEqual(nodes[0]!.counts.routed, [])
        })
      )
  )

  it.scoped(
    "a flood of routed envelopes is cut at the relay's rate; what passes is delivered once each",
    () =>
      onNetwork(
        { seed: 22 },
        Effect.gen(function* () {
          const { ids, nodes, mallory, write } = yield* setUp
          const slots = Array.from({ length: 1500 }, (_, i) =>
            routedSlot(mallory, BigInt(i + 1), ids[1]!.peerId, 1n)
          )
          for (let i = 0; i < slots.length; i += 100) yield* write(Channel.consensus, slots.slice(i, i + 100))
          // The same envelopes again: each is forwarded once at most.
          yield* write(Channel.consensus, slots.slice(0, 100))
          yield* advance(200)
          const outcomes = nodes[0]!.counts.routed
          assert.strictEqual(outcomes.filter((o) => o === "forwarded").length, 1000, "the burst")
          assert.strictEqual(outcomes.filter((o) => o === "over-limit").length, 500)
          const votes = nodes[1]!.delivered.filter((d) => d.origin === mallory.peerId)
          assert.lengthOf(votes, 1000)
          assert.strictEqual(new Set(votes.map((d) => d.sequence)).size, 1000, "once each")
          for (const d of votes) assert.strictEqual(d.from, ids[0]!.peerId, "carried by node 0")
          assert.lengthOf(
            nodes[0]!.delivered.filter((d) => d.origin === mallory.peerId),
            0,
            "the relay delivers none"
          )
        })
      )
  )

  it.scoped(
    "a routed envelope for a peer the relay cannot carry it to is dropped and counted, not charged",
    () =>
      onNetwork(
        { seed: 23 },
        Effect.gen(function* () {
          const { nodes, mallory, write } = yield* setUp
          // A target outside the validator set: no relay carries anything to it.
          yield* write(Channel.consensus, [routedSlot(mallory, 1n, key(77).peerId, 1n)])
          yield* advance(100)
          assert.deepStrictEqual(nodes[0]!.counts.routed, ["no-route"])
          assert.deepStrictEqual(nodes[0]!.counts.rejected, [])
          assert.strictEqual(yield* scoreOf(nodes[0]!, mallory.peerId), 0)
        })
      )
  )

  it.scoped(
    "tree slots: a header the epoch cannot hold is refused and charged; an unknown epoch is delivered, not relayed; receipts for nothing are ignored",
    () =>
      onNetwork(
        { seed: 24 },
        Effect.gen(function* () {
          const { nodes, mallory, write } = yield* setUp
          const message = Either.getOrThrow(Codec.encode(vote(1n, mallory.peerId)))
          const badHeader = sealed(
            mallory,
            1n,
            Payload.TREE,
            encodeTreeHeader({ epoch: 0n, round: 1n, fanout: 2, demoted: [40] }, message)
          )
          const unknownEpoch = sealed(
            mallory,
            2n,
            Payload.TREE,
            encodeTreeHeader({ epoch: 7n, round: 1n, fanout: 2, demoted: [] }, message)
          )
          const relayedBefore = nodes[0]!.counts.relayed
          yield* write(Channel.consensus, [
            badHeader,
            unknownEpoch,
            encodeReceipt([1n, 2n, 3n]),
            Uint8Array.of(Payload.RECEIPT)
          ])
          yield* advance(100)
          assert.deepStrictEqual(
            nodes[0]!.counts.rejected.map((r) => r.reason),
            ["malformed", "malformed"],
            "the header past the epoch's members, and the empty receipt"
          )
          assert.match(nodes[0]!.counts.rejected[0]!.detail, /demoted index 40/)
          const delivered = nodes[0]!.delivered.filter((d) => d.origin === mallory.peerId)
          assert.deepStrictEqual(
            delivered.map((d) => d.sequence),
            [2n],
            "the unknown epoch's envelope is delivered"
          )
          assert.strictEqual(nodes[0]!.counts.relayed, relayedBefore, "and not relayed")
        })
      )
  )

  it.scoped(
    "a forward slot repeated 2,000 times is checked against the rate before its signature: 1,000 passed on, 1,000 over the limit, delivered once",
    () =>
      onNetwork(
        { seed: 25 },
        Effect.gen(function* () {
          const { ids, nodes, mallory, write } = yield* setUp
          const message = Either.getOrThrow(Codec.encode(vote(1n, mallory.peerId)))
          const inner = sealed(
            mallory,
            1n,
            Payload.TREE,
            encodeTreeHeader({ epoch: 0n, round: 1n, fanout: 2, demoted: [] }, message)
          )
          const forward = Payload.forward(Buffer.from(ids[2]!.peerId, "hex"), inner)
          for (let i = 0; i < 20; i++) yield* write(Channel.consensus, Array(100).fill(forward))
          yield* advance(200)
          const outcomes = nodes[0]!.counts.routed
          assert.strictEqual(outcomes.filter((o) => o === "forwarded").length, 1000)
          assert.strictEqual(outcomes.filter((o) => o === "over-limit").length, 1000)
          assert.lengthOf(
            nodes[2]!.delivered.filter((d) => d.origin === mallory.peerId),
            1,
            "the target delivers it once"
          )
          assert.throws(() => Payload.forward(new Uint8Array(31), inner), /32 bytes/)
        })
      )
  )
})
