// NodeRpc under TestCluster and TestClock: request/response between validators over the simulated
// network, its typed failures and its bounds.

import type * as RpcClient from "@effect/rpc/RpcClient"
import { assert, it } from "@effect/vitest"
import { Message } from "@hotstuff2/wire"
import * as Cause from "effect/Cause"
import * as Chunk from "effect/Chunk"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Option from "effect/Option"
import * as Ref from "effect/Ref"
import * as Stream from "effect/Stream"
import * as TestClock from "effect/TestClock"
import { type NodeNetwork, NodeRpc, TestCluster } from "../src/index.js"
import { clientOf, type SyncRpcs, serve, settle } from "./fixtures/rpc.js"
import { waitSimulated } from "./fixtures/wait.js"

const meshed = (cluster: TestCluster.TestCluster) =>
  waitSimulated(
    "a full mesh",
    Effect.map(
      Effect.forEach(cluster.validators, (v) => cluster.node(v.index).peers),
      (all) =>
        all.every((ps) => ps.filter((p) => p.state === "connected").length === cluster.validators.length - 1)
    )
  )

/** Everything `net` delivers on `messages`, collected in the background. */
const collect = (net: NodeNetwork.Shape) =>
  Effect.gen(function* () {
    const seen = yield* Ref.make<ReadonlyArray<NodeNetwork.Inbound>>([])
    yield* Effect.forkScoped(Stream.runForEach(net.messages, (m) => Ref.update(seen, (all) => [...all, m])))
    return seen
  })

const failureOf = <A, E>(exit: Exit.Exit<A, E>): E => {
  if (Exit.isSuccess(exit)) throw new Error(`succeeded: ${String(exit.value)}`)
  const failure = Cause.failureOption(exit.cause)
  if (Option.isNone(failure)) throw new Error(`no typed failure: ${Cause.pretty(exit.cause)}`)
  return failure.value
}

it.scoped(
  "fifty concurrent requests between two validators each get their own answer, the peer header is the server's word, and no RPC frame reaches messages",
  () =>
    Effect.gen(function* () {
      const cluster = yield* TestCluster.make({ size: 3, seed: 11, link: { latency: 5, jitter: 4 } })
      yield* meshed(cluster)
      const [a, b] = [cluster.node(0), cluster.node(1)]
      const seenA = yield* collect(a)
      const seenB = yield* collect(b)
      yield* serve(b, "b")
      const client = yield* clientOf(a, b.self)
      const tips = Array.from({ length: 50 }, (_, i) => `tip${i}`)
      const exit = yield* settle(
        Effect.forEach(tips, (tip, i) => client.GetChain({ tip, max: 1 + (i % 8) }), {
          concurrency: "unbounded"
        })
      )
      assert.isTrue(Exit.isSuccess(exit), Exit.isFailure(exit) ? Cause.pretty(exit.cause) : "")
      const chains = Exit.isSuccess(exit) ? exit.value : []
      chains.forEach((chain, i) => {
        assert.strictEqual(chain.length, 1 + (i % 8))
        assert.strictEqual(chain[0]!.hash, `${tips[i]}-0`, "each answer is its own request's")
      })
      // The RPC's own error, typed.
      const unknown = failureOf(yield* settle(client.GetChain({ tip: "unknown", max: 1 })))
      assert.strictEqual(unknown._tag, "UnknownBlock")
      // The server names the asking peer, whatever the client claims.
      const who = yield* settle(client.Who(undefined, { headers: { [NodeRpc.PEER_HEADER]: "forged" } }))
      assert.deepStrictEqual(who, Exit.succeed(a.self))
      // A stream: every chunk in order.
      const counted = yield* settle(Stream.runCollect(client.Count({ to: 40 })))
      assert.deepStrictEqual(
        Exit.map(counted, Chunk.toReadonlyArray),
        Exit.succeed(Array.from({ length: 40 }, (_, i) => i + 1))
      )
      // `messages` works and carries what it should: a sync message sent after all of the above.
      yield* a.send(b.self, Message.SyncRequest.make({ requestId: 1n, fromHeight: 1n, maxBlocks: 1 }))
      yield* waitSimulated(
        "the SyncRequest on b's messages",
        Effect.map(Ref.get(seenB), (all) => all.some((m) => m.message._tag === "SyncRequest"))
      )
      const rpcTags = new Set(["RpcRequest", "RpcResponse"])
      for (const seen of [seenA, seenB]) {
        assert.deepStrictEqual(
          (yield* Ref.get(seen)).filter((m) => rpcTags.has(m.message._tag)),
          []
        )
      }
    })
)

it.scoped("a consumer of messages that waits on a request inside its handler gets its answer", () =>
  Effect.gen(function* () {
    const cluster = yield* TestCluster.make({ size: 2, seed: 12 })
    yield* meshed(cluster)
    const [a, b] = [cluster.node(0), cluster.node(1)]
    yield* serve(b, "b")
    const client = yield* clientOf(a, b.self, { timeout: "5 seconds" })
    // b's own consumer of messages is busy for good: the server must not need it.
    const answers = yield* Ref.make<ReadonlyArray<string>>([])
    yield* Effect.forkScoped(
      Stream.runForEach(a.messages, () =>
        Effect.flatMap(client.Slow({ millis: 10 }), (answer) =>
          Ref.update(answers, (all) => [...all, answer])
        )
      )
    )
    yield* b.send(a.self, Message.AppMessage.make({ topic: "go", data: new Uint8Array(1) }))
    yield* waitSimulated(
      "the answer inside a's handler",
      Effect.map(Ref.get(answers), (all) => all.length === 1)
    )
    assert.deepStrictEqual(yield* Ref.get(answers), ["b slept 10"])
  })
)

it.scoped(
  "a request with no answer within the client's timeout fails with RpcTimeout and is interrupted at the server",
  () =>
    Effect.gen(function* () {
      const cluster = yield* TestCluster.make({ size: 2, seed: 13 })
      yield* meshed(cluster)
      const [a, b] = [cluster.node(0), cluster.node(1)]
      const server = yield* serve(b, "b")
      const client = yield* clientOf(a, b.self, { timeout: "2 seconds" })
      const start = yield* TestClock.currentTimeMillis
      const error = failureOf(yield* settle(client.Slow({ millis: 60_000 })))
      assert.strictEqual(error._tag, "RpcTimeout")
      assert.isAtLeast((yield* TestClock.currentTimeMillis) - start, 2000)
      assert.isBelow((yield* TestClock.currentTimeMillis) - start, 60_000)
      yield* waitSimulated(
        "the handler interrupted",
        Effect.sync(() => server.log.interrupted.length === 1)
      )
      // Without a timeout the same request runs to its end.
      const patient = yield* clientOf(a, b.self, { timeout: "none" })
      assert.deepStrictEqual(yield* settle(patient.Slow({ millis: 3000 })), Exit.succeed("b slept 3000"))
    })
)

/** Asks each peer in turn, moving on after a typed failure of the network: block sync's loop. */
const fromAnyPeer = (
  clients: ReadonlyArray<RpcClient.FromGroup<typeof SyncRpcs, NodeRpc.RpcClientFailure>>,
  millis: number
) =>
  Effect.gen(function* () {
    const failures: Array<string> = []
    for (const client of clients) {
      const result = yield* Effect.either(client.Slow({ millis }))
      if (Either.isRight(result)) return { answer: result.right, failures }
      failures.push(`${result.left._tag}:${"reason" in result.left ? result.left.reason : ""}`)
    }
    return { answer: undefined, failures }
  })

it.scoped(
  "the serving validator stops mid-request: RpcUnavailable at the client, and the retry on another peer succeeds",
  () =>
    Effect.gen(function* () {
      const cluster = yield* TestCluster.make({ size: 3, seed: 14 })
      yield* meshed(cluster)
      const [a, b, c] = [cluster.node(0), cluster.node(1), cluster.node(2)]
      const serverB = yield* serve(b, "b")
      yield* serve(c, "c")
      const clients = [yield* clientOf(a, b.self), yield* clientOf(a, c.self)] as const
      const fiber = yield* Effect.fork(fromAnyPeer(clients, 3000))
      yield* waitSimulated(
        "b's handler to start",
        Effect.sync(() => serverB.log.started.length === 1)
      )
      yield* cluster.stop(1)
      yield* waitSimulated("the retry to end", Effect.map(Fiber.poll(fiber), Option.isSome))
      const result = yield* Fiber.join(fiber)
      assert.deepStrictEqual(result.failures, ["RpcUnavailable:disconnected"])
      assert.strictEqual(result.answer, "c slept 3000")
      // b is not connected now: the next request fails at once, typed.
      const now = failureOf(yield* settle(clients[0].Slow({ millis: 1 })))
      assert.strictEqual(now._tag, "RpcUnavailable")
    })
)

it.scoped(
  "an answer over the server's maxResponseBytes is not sent: RpcRefused with its size, and the client goes on",
  () =>
    Effect.gen(function* () {
      const cluster = yield* TestCluster.make({ size: 2, seed: 15 })
      yield* meshed(cluster)
      const [a, b] = [cluster.node(0), cluster.node(1)]
      yield* serve(b, "b", { maxResponseBytes: 64 * 1024 })
      const client = yield* clientOf(a, b.self)
      const error = failureOf(yield* settle(client.Sized({ bytes: 100_000 })))
      assert.strictEqual(error._tag, "RpcRefused")
      if (error._tag === "RpcRefused") {
        assert.strictEqual(error.reason, "response-too-large")
        assert.strictEqual(error.limit, 64 * 1024)
        assert.isAbove(error.size!, 100_000)
      }
      const small = yield* settle(client.Sized({ bytes: 60_000 }))
      assert.isTrue(Exit.isSuccess(small) && small.value.length === 60_000)
    })
)

it.scoped(
  "a peer's requests in flight are bounded by maxInFlightPerPeer: the ones over it are refused at once, the rest answered",
  () =>
    Effect.gen(function* () {
      const cluster = yield* TestCluster.make({ size: 2, seed: 16 })
      yield* meshed(cluster)
      const [a, b] = [cluster.node(0), cluster.node(1)]
      yield* serve(b, "b", { maxInFlightPerPeer: 4 })
      // Two clients of the same peer share its bound.
      const first = yield* clientOf(a, b.self)
      const second = yield* clientOf(a, b.self)
      const requests = [first, first, first, second, second, second].map((client) =>
        Effect.either(client.Slow({ millis: 5000 }))
      )
      const start = yield* TestClock.currentTimeMillis
      const fibers = yield* Effect.forEach(requests, (r) => Effect.fork(r))
      yield* waitSimulated(
        "two refusals",
        Effect.map(Effect.forEach(fibers, Fiber.poll), (ps) => ps.filter(Option.isSome).length === 2)
      )
      assert.isBelow((yield* TestClock.currentTimeMillis) - start, 5000, "refused before any answer")
      yield* waitSimulated(
        "every request to end",
        Effect.map(Effect.forEach(fibers, Fiber.poll), (ps) => ps.every(Option.isSome))
      )
      const results = yield* Effect.forEach(fibers, Fiber.join)
      const refused = results.filter(Either.isLeft).map((r) => r.left)
      assert.strictEqual(refused.length, 2)
      for (const error of refused) {
        assert.strictEqual(error._tag, "RpcRefused")
        if (error._tag === "RpcRefused")
          assert.deepStrictEqual([error.reason, error.limit], ["too-many-requests", 4])
      }
      assert.strictEqual(results.filter(Either.isRight).length, 4)
      // Once they are answered, there is room again.
      assert.deepStrictEqual(yield* settle(second.Slow({ millis: 1 })), Exit.succeed("b slept 1"))
    })
)

it.scoped("a validator that serves no RPC answers RpcRefused (not-served) at once", () =>
  Effect.gen(function* () {
    const cluster = yield* TestCluster.make({ size: 2, seed: 17 })
    yield* meshed(cluster)
    const client = yield* clientOf(cluster.node(0), cluster.node(1).self)
    const error = failureOf(yield* settle(client.Slow({ millis: 1 }), "1 second"))
    assert.strictEqual(error._tag, "RpcRefused")
  })
)

it.scoped(
  "RPC messages are point to point: broadcast, multicast, a reliable and a routed send of one are InvalidOutbound",
  () =>
    Effect.gen(function* () {
      const cluster = yield* TestCluster.make({ size: 3, seed: 18 })
      yield* meshed(cluster)
      const a = cluster.node(0)
      const absent = cluster.node(2).self
      yield* cluster.stop(2)
      yield* waitSimulated(
        "validator 2 disconnected",
        Effect.map(a.peers, (ps) => ps.some((p) => p.id === absent && p.state !== "connected"))
      )
      const request = Message.RpcRequest.make({ data: new Uint8Array(8) })
      const attempts: ReadonlyArray<
        Effect.Effect<unknown, { readonly _tag: string; readonly message: string }>
      > = [
        a.broadcast(request),
        a.multicast([cluster.node(1).self], request),
        a.send(cluster.node(1).self, request, { reliable: true }),
        a.send(absent, request, { route: true })
      ]
      for (const attempt of attempts) {
        const error = yield* Effect.flip(attempt)
        assert.strictEqual(error._tag, "InvalidOutbound")
        assert.match(error.message, /point to point only/)
      }
    })
)
