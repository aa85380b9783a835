// Validator-set epochs under TestClock on the simulated network: a set of 7 replaced by another of 7
// sharing 4. Traffic keeps flowing to the members that stay, the newcomers are connected, and the
// leavers are dropped once they leave every tracked set and their grace is over.
import { assert, describe, it } from "@effect/vitest"
import * as Chunk from "effect/Chunk"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as Stream from "effect/Stream"
import * as TestClock from "effect/TestClock"
import type { NodeNetwork } from "../src/index.js"
import * as TestCluster from "../src/TestCluster.js"
import { vote } from "./fixtures/cluster.js"

const A = [0, 1, 2, 3, 4, 5, 6]
const B = [0, 1, 2, 3, 7, 8, 9]

const connectedTo = (net: NodeNetwork.Shape) =>
  Effect.map(net.peers, (peers) => new Set(peers.filter((p) => p.state === "connected").map((p) => p.id)))

describe("validator-set epochs", () => {
  it.scoped(
    "7 validators to another 7 sharing 4: stayers keep receiving, newcomers connect, leavers are dropped after the grace",
    () =>
      Effect.gen(function* () {
        const cluster = yield* TestCluster.make({
          size: 10,
          seed: 3,
          members: (i) => (A.includes(i) ? A : B),
          config: { trackedEpochs: 2, leaveGrace: "10 seconds" }
        })
        const id = (i: number) => cluster.validators[i]!.identity.peerId
        const setB = B.map((i) => ({ id: id(i), addresses: [cluster.validators[i]!.address] }))
        yield* TestClock.adjust("10 seconds")
        const zero = cluster.node(0)
        assert.deepStrictEqual(yield* connectedTo(zero), new Set(A.filter((i) => i !== 0).map(id)))

        const seen: Array<NodeNetwork.PeerEvent> = []
        yield* Effect.forkScoped(
          Stream.runForEach(
            zero.peerEvents.pipe(
              Stream.filter((e) => e._tag === "ValidatorJoined" || e._tag === "ValidatorLeft")
            ),
            (e) => Effect.sync(() => seen.push(e))
          )
        )
        yield* TestClock.adjust("1 millis")
        // Epoch 1 on every node: set B. Epoch 0 (set A) is still tracked: nobody is dropped yet.
        for (const i of [...A, 7, 8, 9]) yield* cluster.node(i).updateValidators(1n, setB)
        yield* TestClock.adjust("10 seconds")
        assert.deepStrictEqual(
          seen
            .filter((e) => e._tag === "ValidatorJoined")
            .map((e) => e.peer)
            .sort(),
          [7, 8, 9].map(id).sort()
        )
        assert.deepStrictEqual(
          seen.filter((e) => e._tag === "ValidatorLeft"),
          []
        )
        assert.deepStrictEqual(
          yield* connectedTo(zero),
          new Set([1, 2, 3, 4, 5, 6, 7, 8, 9].map(id)),
          "the union of epochs 0 and 1"
        )
        // Broadcasts go to the newest set only.
        const receipt = yield* zero.broadcast(vote(1n, id(0)))
        assert.deepStrictEqual([...receipt.queued].sort(), [1, 2, 3, 7, 8, 9].map(id).sort())
        const status = (yield* zero.peers).find((p) => p.id === id(1))!
        assert.deepStrictEqual(status.epochs, [0n, 1n])
        assert.deepStrictEqual((yield* zero.peers).find((p) => p.id === id(4))!.epochs, [0n])

        // Epoch 2 (the same set B): epoch 0 is no longer tracked, so 4, 5 and 6 have left every set.
        for (const i of [...A, 7, 8, 9]) yield* cluster.node(i).updateValidators(2n, setB)
        yield* TestClock.adjust("1 millis")
        assert.deepStrictEqual(
          seen
            .filter((e) => e._tag === "ValidatorLeft")
            .map((e) => e.peer)
            .sort(),
          [4, 5, 6].map(id).sort()
        )
        // Within the grace they are still connected; after it, gone, and refused when they redial.
        yield* TestClock.adjust("5 seconds")
        assert.isTrue((yield* connectedTo(zero)).has(id(4)))
        yield* TestClock.adjust("30 seconds")
        assert.deepStrictEqual(yield* connectedTo(zero), new Set([1, 2, 3, 7, 8, 9].map(id)))
        // Traffic to the stayers and newcomers still flows.
        const inbox = yield* Effect.fork(Stream.runCollect(Stream.take(cluster.node(8).messages, 1)))
        yield* TestClock.adjust("1 millis")
        yield* zero.broadcast(vote(2n, id(0)))
        yield* TestClock.adjust("1 second")
        const [got] = Chunk.toReadonlyArray(yield* Fiber.join(inbox))
        assert.strictEqual(got!.origin, id(0))
        // An epoch that is not newer is refused, typed.
        const error = yield* Effect.flip(zero.updateValidators(1n, setB))
        assert.strictEqual(error._tag, "InvalidValidatorSet")
      })
  )

  it.scoped("overlapping graces: each leaver keeps its own; one that comes back during its grace stays", () =>
    Effect.gen(function* () {
      const cluster = yield* TestCluster.make({
        size: 6,
        seed: 4,
        config: { trackedEpochs: 1, leaveGrace: "30 seconds" }
      })
      const id = (i: number) => cluster.validators[i]!.identity.peerId
      const setOf = (ns: ReadonlyArray<number>) =>
        ns.map((i) => ({ id: id(i), addresses: [cluster.validators[i]!.address] }))
      const zero = cluster.node(0)
      yield* TestClock.adjust("10 seconds")
      // t = 0: 5 leaves. t = 10: 4 leaves too, and 3 with it. t = 20: 3 comes back.
      yield* zero.updateValidators(1n, setOf([0, 1, 2, 3, 4]))
      yield* TestClock.adjust("10 seconds")
      yield* zero.updateValidators(2n, setOf([0, 1, 2]))
      yield* TestClock.adjust("10 seconds")
      yield* zero.updateValidators(3n, setOf([0, 1, 2, 3]))
      yield* TestClock.adjust("15 seconds") // t = 35: 5's grace is over, 4's (until t = 40) is not
      const at35 = yield* connectedTo(zero)
      assert.isFalse(at35.has(id(5)), "5 dropped after its grace")
      assert.isTrue(at35.has(id(4)), "4 still within its own grace")
      yield* TestClock.adjust("10 seconds") // t = 45
      assert.deepStrictEqual(yield* connectedTo(zero), new Set([1, 2, 3].map(id)))
    })
  )
})
