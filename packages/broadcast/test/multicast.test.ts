// Multicast on a four-validator mesh under TestClock on the simulated network: the chosen peers get
// the message once each, the others (and the sender itself) never.
import { assert, describe, it } from "@effect/vitest"
import { PeerManager, PeerRegistry } from "@hotstuff2/peers"
import { MemoryTransport, SimulatedNetwork } from "@hotstuff2/transport"
import { Identity, Message } from "@hotstuff2/wire"
import * as Chunk from "effect/Chunk"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Layer from "effect/Layer"
import * as Queue from "effect/Queue"
import * as Stream from "effect/Stream"
import * as TestClock from "effect/TestClock"
import { Broadcaster } from "../src/index.js"

const NETWORK = "hotstuff2-multicast-test"

const key = (n: number) => {
  const seed = new Uint8Array(32)
  seed[0] = 0xc0
  seed[1] = n
  return Either.getOrThrow(Identity.fromSeed(seed))
}
const members = [1, 2, 3, 4].map(key)
const addressOf = (id: Identity.Identity) => `${MemoryTransport.hostOf(id.peerId)}:9000`

const vote = (view: bigint, voter: Identity.PeerId) =>
  Message.Vote.make({ view, blockHash: new Uint8Array(32).fill(2), voter, signature: new Uint8Array(64) })

interface Node {
  readonly id: Identity.Identity
  readonly broadcaster: Broadcaster.BroadcasterShape
  readonly manager: PeerManager.PeerManagerShape
  readonly inbox: Queue.Queue<Broadcaster.Delivery>
  /** What the node's observer counted: envelopes queued to peers, and duplicates received. */
  readonly counts: { sent: number; duplicates: number }
}

/** A full validator node (registry, manager, broadcaster) in the test's scope; its inbound in `inbox`. */
const startNode = (id: Identity.Identity) =>
  Effect.gen(function* () {
    const counts = { sent: 0, duplicates: 0 }
    const peersConfig = { dialGrace: 0 }
    const layer = Broadcaster.Broadcaster.layer({
      identity: id,
      networkId: NETWORK,
      validators: members.map((m) => m.peerId),
      observer: { sent: () => void counts.sent++, duplicate: () => void counts.duplicates++ }
    }).pipe(
      Layer.provideMerge(
        PeerManager.PeerManager.layer({
          identity: id,
          listen: addressOf(id),
          validators: members.map((m) => ({ id: m.peerId, addresses: [addressOf(m)] })),
          config: peersConfig
        })
      ),
      Layer.provideMerge(MemoryTransport.layer({ identity: id, config: { networkId: NETWORK } })),
      Layer.provideMerge(PeerRegistry.PeerRegistry.layer(peersConfig))
    )
    const context = yield* Layer.build(layer)
    const broadcaster = Context.get(context, Broadcaster.Broadcaster)
    const inbox = yield* Queue.unbounded<Broadcaster.Delivery>()
    yield* Effect.forkScoped(Stream.runForEach(broadcaster.inbound, (d) => Queue.offer(inbox, d)))
    return {
      id,
      broadcaster,
      manager: Context.get(context, PeerManager.PeerManager),
      inbox,
      counts
    } satisfies Node
  })

const taken = (node: Node) => Effect.map(Queue.takeAll(node.inbox), Chunk.toReadonlyArray)

describe("Broadcaster multicast", () => {
  it.scoped("reaches exactly the chosen peers, once each; the others and the sender get nothing", () =>
    Effect.flatMap(Layer.build(SimulatedNetwork.SimulatedNetwork.layer({ seed: 5 })), (simulated) =>
      Effect.provide(
        Effect.gen(function* () {
          const nodes = yield* Effect.forEach(members, startNode)
          // The full mesh first (bounded in simulated time), so that every peer could be reached.
          for (let i = 0; i < 100; i++) {
            const connected = yield* Effect.forEach(nodes, (n) => n.manager.connected)
            if (connected.every((c) => c.length === members.length - 1)) break
            yield* TestClock.adjust("100 millis")
          }
          for (const node of nodes) assert.lengthOf(yield* node.manager.connected, members.length - 1)
          const [a, b, c, d] = nodes as [Node, Node, Node, Node]

          // To b and c (and a itself, which is skipped); d is connected but not chosen.
          const first = yield* a.broadcaster.multicast(
            [b.id.peerId, a.id.peerId, c.id.peerId],
            vote(1n, a.id.peerId)
          )
          assert.deepStrictEqual(first.queued, [b.id.peerId, c.id.peerId])
          assert.deepStrictEqual(first.failed, [])
          // Then to d alone.
          const second = yield* a.broadcaster.multicast([d.id.peerId], vote(2n, a.id.peerId))
          assert.deepStrictEqual(second.queued, [d.id.peerId])
          // Long enough for anything sent, forwarded or repeated to arrive (links have no latency).
          yield* TestClock.adjust("5 seconds")

          const got = yield* Effect.forEach(nodes, taken)
          const views = got.map((deliveries) => deliveries.map((x) => (x.message as Message.Vote).view))
          assert.deepStrictEqual(views, [[], [1n], [1n], [2n]], "views delivered at a, b, c, d")
          for (const [i, deliveries] of got.entries()) {
            for (const delivery of deliveries) {
              assert.strictEqual(delivery.origin, a.id.peerId, `origin at node ${i}`)
              assert.strictEqual(delivery.from, a.id.peerId, `carried by a to node ${i}`)
              assert.strictEqual(delivery.sequence, i === 3 ? second.sequence : first.sequence)
            }
          }
          // One envelope queued per chosen peer, and none received twice.
          assert.strictEqual(a.counts.sent, 3)
          assert.deepStrictEqual(
            nodes.map((n) => n.counts.duplicates),
            [0, 0, 0, 0]
          )
        }),
        simulated
      )
    )
  )
})
