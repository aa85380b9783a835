// TestCluster: what a consensus application's tests get, under TestClock.
import { assert, it } from "@effect/vitest"
import type { Message } from "@hotstuff2/wire"
import * as Chunk from "effect/Chunk"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as Stream from "effect/Stream"
import * as TestClock from "effect/TestClock"
import { TestCluster } from "../src/index.js"
import { proposal } from "./fixtures/cluster.js"
import { waitSimulated } from "./fixtures/wait.js"

const connected = (cluster: TestCluster.TestCluster, index: number) =>
  Effect.map(cluster.node(index).peers, (ps) => ps.filter((p) => p.state === "connected").length)

it.scoped(
  "seven validators with 40 ms links: full mesh, a broadcast reaches all six, an isolated node misses it",
  () =>
    Effect.gen(function* () {
      const cluster = yield* TestCluster.make({ size: 7, seed: 42, link: { latency: 40, jitter: 5 } })
      yield* waitSimulated(
        "the condition",
        Effect.map(
          Effect.forEach(cluster.validators, (v) => connected(cluster, v.index)),
          (ns) => ns.every((n) => n === 6)
        )
      )
      const receivers = yield* Effect.forEach([1, 2, 3, 4, 5, 6], (i) =>
        Effect.fork(Stream.runCollect(Stream.take(cluster.node(i).messages, 1)))
      )
      yield* cluster.network.isolate(cluster.validators[6]!.host)
      const leader = cluster.node(0)
      const start = yield* TestClock.currentTimeMillis
      yield* leader.broadcast(proposal(1n, leader.self))
      yield* waitSimulated(
        "the condition",
        Effect.map(Effect.forEach(receivers.slice(0, 5), Fiber.poll), (ps) =>
          ps.every((p) => p._tag === "Some")
        )
      )
      const elapsed = (yield* TestClock.currentTimeMillis) - start
      assert.isAtLeast(elapsed, 30, "one link latency, minus jitter")
      assert.isAtMost(elapsed, 60)
      for (const fiber of receivers.slice(0, 5)) {
        const [inbound] = Chunk.toReadonlyArray(yield* Fiber.join(fiber))
        assert.strictEqual(inbound!.origin, leader.self)
        assert.strictEqual((inbound!.message as Message.Message & { view: bigint }).view, 1n)
      }
      assert.strictEqual((yield* Fiber.poll(receivers[5]!))._tag, "None", "the isolated node got nothing")
    })
)

it.scoped("a stopped validator is redialled when it starts again", () =>
  Effect.gen(function* () {
    const cluster = yield* TestCluster.make({ size: 4, seed: 9 })
    yield* waitSimulated(
      "the condition",
      Effect.map(connected(cluster, 0), (n) => n === 3)
    )
    yield* cluster.stop(3)
    yield* waitSimulated(
      "the condition",
      Effect.map(connected(cluster, 0), (n) => n === 2)
    )
    yield* cluster.start(3)
    // Every pair comes back: which side of a pair dials first follows the PeerId ring, so validator
    // 0 may have 3 back before validator 3 has all of its own.
    yield* waitSimulated(
      "the condition",
      Effect.map(connected(cluster, 0), (n) => n === 3)
    )
    yield* waitSimulated(
      "the condition",
      Effect.map(connected(cluster, 3), (n) => n === 3)
    )
    assert.strictEqual(yield* connected(cluster, 3), 3)
  })
)
