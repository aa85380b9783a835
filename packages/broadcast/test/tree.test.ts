// The tree strategy under TestClock on the simulated network, with latency and per-host upload set:
// every validator gets each broadcast exactly once; relays that are cut off or drop what they should
// forward are routed around (repairs) and demoted; a partial partition is crossed.
import { assert, describe, it } from "@effect/vitest"
import { SimulatedNetwork } from "@hotstuff2/transport"
import type { Identity } from "@hotstuff2/wire"
import { Message } from "@hotstuff2/wire"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Option from "effect/Option"
import { assertExactlyOnce } from "./fixtures/assertions.js"
import {
  advance,
  awaitMesh,
  type Fault,
  hostOf,
  key,
  onNetwork,
  proposal,
  setUploads,
  startCluster,
  treeOf
} from "./fixtures/cluster.js"

const LINK = { latency: 5 }
const UPLOAD = 50_000_000

/** Sixteen validators with the tree strategy (fanout 4), uploads limited, meshed; node 0 is the origin. */
const sixteen = (faults?: ReadonlyMap<number, Fault>) =>
  Effect.gen(function* () {
    const { ids, nodes } = yield* startCluster({
      size: 16,
      broadcast: { strategy: "tree", fanout: 4 },
      ...(faults === undefined ? {} : { faults })
    })
    yield* setUploads(ids, UPLOAD)
    yield* awaitMesh(nodes)
    return { ids, nodes, origin: nodes[0]! }
  })

/** Each of `peers` (by its index among `all`) with `fault`. */
const faultsAt = (
  peers: ReadonlyArray<Identity.PeerId>,
  fault: Fault,
  all: ReadonlyArray<Identity.Identity>
) => new Map(peers.map((peer) => [all.findIndex((id) => id.peerId === peer), fault] as const))

describe("tree broadcast", () => {
  it.scoped(
    "N = 16: each validator receives every broadcast once; the origin uploads only to its children",
    () =>
      onNetwork(
        { seed: 3, defaults: LINK },
        Effect.gen(function* () {
          const { nodes, origin } = yield* sixteen()
          const sequences: Array<bigint> = []
          const sentBefore = origin.counts.sent
          for (let view = 1n; view <= 10n; view++) {
            const receipt = yield* origin.broadcaster.broadcast(proposal(view, origin.id.peerId, 32 * 1024))
            assert.strictEqual(receipt.strategy, "tree")
            assert.lengthOf(receipt.queued, 4, "the root's four children")
            sequences.push(receipt.sequence)
            yield* advance(50)
          }
          yield* advance(3000)
          assertExactlyOnce(nodes, origin, sequences)
          assert.strictEqual(origin.counts.sent - sentBefore, 40, "4 copies per broadcast, no repair")
          assert.strictEqual(origin.counts.repaired, 0)
          const relayed = nodes.reduce((sum, n) => sum + (n?.counts.relayed ?? 0), 0)
          assert.strictEqual(relayed, 10 * 11, "the other 11 validators got theirs from a relay")
          // Relaying rotates with the view: more than 4 validators relayed over 10 views.
          assert.isAbove(nodes.filter((n) => n !== undefined && n.counts.relayed > 0).length, 4)
          assert.deepStrictEqual(
            nodes.flatMap((n) => n?.counts.rejected ?? []),
            [],
            "nothing refused"
          )
        })
      ),
    60_000
  )

  it.scoped(
    "N = 16, f = 5 validators that drop what they should forward: repaired around, blamed, then made leaves",
    () =>
      onNetwork(
        { seed: 4, defaults: LINK },
        Effect.gen(function* () {
          const all = Array.from({ length: 16 }, (_, i) => key(i + 1))
          // f = 5 of 16 drop everything they should relay: the root's four children in view 1 (every
          // relay of that tree) and one of their children, which becomes a relay once they are demoted.
          const first = treeOf(all, all[0]!, 1n, 4)
          const relays = first.children(all[0]!.peerId)
          const droppers = [...relays, first.children(relays[0]!)[0]!]
          const { nodes, origin } = yield* sixteen(faultsAt(droppers, "drop-relayed", all))
          const sequences: Array<bigint> = []
          for (let i = 0; i < 8; i++) {
            const receipt = yield* origin.broadcaster.broadcast(
              proposal(1n, origin.id.peerId, 8 * 1024, i + 1)
            )
            sequences.push(receipt.sequence)
            yield* advance(3000)
          }
          assertExactlyOnce(nodes, origin, sequences)
          assert.isAbove(origin.counts.repaired, 0, "the droppers' children were repaired")
          for (const dropper of relays)
            assert.include(origin.counts.relayFailed, dropper, "each dropping relay of view 1 is blamed")
          // Demoted after two failures: the last broadcasts needed no repair.
          const repairedBefore = origin.counts.repaired
          const receipt = yield* origin.broadcaster.broadcast(proposal(1n, origin.id.peerId, 8 * 1024, 99))
          yield* advance(3000)
          assertExactlyOnce(nodes, origin, [...sequences, receipt.sequence])
          assert.strictEqual(origin.counts.repaired, repairedBefore, "no repair once the droppers are leaves")
        })
      ),
    60_000
  )

  it.scoped(
    "N = 16, f = 5 cut off mid-flight (still thought connected), every relay among them: their subtrees are not cut off",
    () =>
      onNetwork(
        { seed: 5, defaults: LINK },
        Effect.gen(function* () {
          const network = yield* SimulatedNetwork.SimulatedNetwork
          const { ids, nodes, origin } = yield* sixteen()
          // f = 5 vanish from the network (a crash the others have not noticed): view 1's four relays
          // and one of their children.
          const layout = treeOf(ids, ids[0]!, 1n, 4)
          const relays = layout.children(ids[0]!.peerId)
          const crashed = [...relays, layout.children(relays[0]!)[0]!]
          const cut = new Set(crashed.map((peer) => ids.findIndex((id) => id.peerId === peer)))
          yield* network.partition([crashed.map((peer) => hostOf(ids.find((id) => id.peerId === peer)!))])
          const receipt = yield* origin.broadcaster.broadcast(proposal(1n, origin.id.peerId, 16 * 1024))
          yield* advance(4000)
          assertExactlyOnce(nodes, origin, [receipt.sequence], cut)
          assert.isAbove(origin.counts.repaired, 0)
          for (const i of cut) assert.lengthOf(nodes[i]!.delivered, 0, "a cut-off relay got nothing")
        })
      ),
    60_000
  )

  it.scoped(
    "N = 16, a partial partition: the origin cannot reach three validators, which still get each broadcast once; routed sends reach them",
    () =>
      onNetwork(
        { seed: 6, defaults: LINK },
        Effect.gen(function* () {
          const network = yield* SimulatedNetwork.SimulatedNetwork
          const { ids, nodes, origin } = yield* sixteen()
          const far = [5, 9, 13]
          for (const i of far) yield* network.setLinkBoth(hostOf(ids[0]!), hostOf(ids[i]!), { loss: 1 })
          // Until the origin has dropped them (missed heartbeats).
          for (let i = 0; i < 100; i++) {
            const connected = new Set(yield* origin.manager.connected)
            if (far.every((f) => !connected.has(ids[f]!.peerId))) break
            yield* advance(100)
          }
          const sequences: Array<bigint> = []
          for (let view = 1n; view <= 4n; view++) {
            const receipt = yield* origin.broadcaster.broadcast(proposal(view, origin.id.peerId, 16 * 1024))
            sequences.push(receipt.sequence)
            yield* advance(3000)
          }
          assertExactlyOnce(nodes, origin, sequences)
          for (const i of far) {
            assert.isFalse((yield* origin.manager.connected).includes(ids[i]!.peerId), `still cut from ${i}`)
          }

          // Point to point: refused without routing, carried by a common validator with it.
          const vote = Message.Vote.make({
            view: 9n,
            blockHash: new Uint8Array(32).fill(9),
            voter: origin.id.peerId,
            signature: new Uint8Array(64)
          })
          const refused = yield* Effect.either(origin.broadcaster.send(ids[5]!.peerId, vote))
          assert.isTrue(Either.isLeft(refused) && refused.left._tag === "PeerNotConnected")
          yield* origin.broadcaster.send(ids[5]!.peerId, vote, { route: true })
          yield* advance(500)
          const routed = nodes[5]!.delivered.filter((d) => d.message._tag === "Vote")
          assert.lengthOf(routed, 1, "delivered once though up to three validators carried it")
          assert.strictEqual(routed[0]!.origin, origin.id.peerId)
          assert.notStrictEqual(routed[0]!.from, origin.id.peerId, "carried by another validator")
          assert.include(origin.counts.routed, "sent")
        })
      ),
    60_000
  )

  it.scoped(
    "a relay that alters what it forwards is refused (bad-signature, charged to it); its subtree is repaired",
    () =>
      onNetwork(
        { seed: 7, defaults: LINK },
        Effect.gen(function* () {
          const all = Array.from({ length: 16 }, (_, i) => key(i + 1))
          const liar = treeOf(all, all[0]!, 1n, 4).children(all[0]!.peerId)[0]!
          const { nodes, origin } = yield* sixteen(faultsAt([liar], "alter-relayed", all))
          const receipt = yield* origin.broadcaster.broadcast(proposal(1n, origin.id.peerId, 16 * 1024))
          yield* advance(3000)
          assertExactlyOnce(nodes, origin, [receipt.sequence])
          const refusals = nodes.flatMap((n) => n?.counts.rejected ?? [])
          assert.isAbove(refusals.length, 0)
          for (const r of refusals) {
            assert.strictEqual(r.reason, "bad-signature")
            assert.strictEqual(r.peer, liar, "charged to the relay that altered it")
          }
          const score =
            yield* nodes[
              treeOf(all, all[0]!, 1n, 4)
                .children(liar)
                .map((c) => all.findIndex((id) => id.peerId === c))[0]!
            ]!.registry.get(liar)
          assert.isTrue(Option.isSome(score) && score.value.score < 0, "the liar lost reputation")
        })
      ),
    60_000
  )

  it.scoped(
    "relays that duplicate or delay what they forward: every validator still delivers each broadcast once",
    () =>
      onNetwork(
        { seed: 10, defaults: LINK },
        Effect.gen(function* () {
          const all = Array.from({ length: 16 }, (_, i) => key(i + 1))
          const [doubler, laggard] = treeOf(all, all[0]!, 1n, 4).children(all[0]!.peerId)
          const index = (peer: Identity.PeerId) => all.findIndex((id) => id.peerId === peer)
          const { ids, nodes, origin } = yield* sixteen(
            new Map([
              ...faultsAt([doubler!], "duplicate-relayed", all),
              ...faultsAt([laggard!], "delay-relayed", all)
            ])
          )
          const receipt = yield* origin.broadcaster.broadcast(proposal(1n, origin.id.peerId, 16 * 1024))
          yield* advance(5000)
          assertExactlyOnce(nodes, origin, [receipt.sequence])
          const layout = treeOf(ids, ids[0]!, 1n, 4)
          for (const child of layout.children(doubler!)) {
            assert.isAtLeast(nodes[index(child)]!.counts.duplicates, 1, "the doubled copy was a duplicate")
          }
          assert.isAbove(
            origin.counts.repaired,
            0,
            "the laggard's children were repaired before its copies came"
          )
          for (const child of layout.children(laggard!)) {
            assert.isAtLeast(nodes[index(child)]!.counts.duplicates, 1, "the late copy was a duplicate")
          }
          assert.deepStrictEqual(
            nodes.flatMap((n) => n?.counts.rejected ?? []),
            []
          )
        })
      ),
    60_000
  )

  it.scoped(
    "under a connection budget (24 validators, 8 connections each): the origin and relays dial their children on demand and send once connected; everyone gets each broadcast once, with no repair",
    () =>
      onNetwork(
        { seed: 12, defaults: LINK },
        Effect.gen(function* () {
          const { ids, nodes } = yield* startCluster({
            size: 24,
            broadcast: { strategy: "tree", fanout: 4 },
            peers: { maxConnections: 8, trimTo: 6 }
          })
          yield* setUploads(ids, UPLOAD)
          yield* advance(2000)
          const origin = nodes[0]!
          const connections = yield* Effect.forEach(nodes, (n) => n!.manager.connected)
          assert.isTrue(
            connections.every((c) => c.length < 23),
            "no full mesh"
          )
          const sequences: Array<bigint> = []
          for (let i = 0; i < 3; i++) {
            const repairedBefore = origin.counts.repaired
            const receipt = yield* origin.broadcaster.broadcast(
              proposal(1n, origin.id.peerId, 16 * 1024, i + 1)
            )
            sequences.push(receipt.sequence)
            yield* advance(5000)
            assertExactlyOnce(nodes, origin, sequences)
            if (i === 2)
              assert.strictEqual(origin.counts.repaired, repairedBefore, "the third, over warm connections")
          }
          const relayed = nodes.reduce((sum, n) => sum + (n?.counts.relayed ?? 0), 0)
          assert.isAbove(relayed, 0)
        })
      ),
    120_000
  )
})
