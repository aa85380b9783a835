// The connection budget (issue 13) under TestClock on the simulated network: past `maxConnections`
// validators a node dials only the peers it wants or sends to, and trims the least recently used
// idle connections down to `trimTo`; at or under it, the full mesh as before.
import { assert, describe, it } from "@effect/vitest"
import { TransportConfig } from "@hotstuff2/transport"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Fiber from "effect/Fiber"
import * as TestClock from "effect/TestClock"
import { PeersConfig } from "../src/index.js"
import { identity, type Node, startNode, withNetwork } from "./fixtures/cluster.js"

const { consensus } = TransportConfig.Channel
const id = (n: number) => identity(n).peerId
const range = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, i) => from + i)

/** The node numbers `node` is connected to, sorted. */
const connectedTo = (node: Node, members: ReadonlyArray<number>) =>
  Effect.map(node.manager.connected, (peers) => {
    const set = new Set<string>(peers)
    return members.filter((n) => set.has(id(n)))
  })

/** Node numbers of the senders of the frames waiting in `node`'s inbox, sorted. */
const received = (node: Node, members: ReadonlyArray<number>) =>
  node.manager
    .unsafePoll(10_000)
    .map((frame) => members.find((n) => id(n) === frame.peer) ?? -1)
    .sort((a, b) => a - b)

/** Advances the TestClock by `seconds`, one second at a time, running `each` after every step. */
const tick = (seconds: number, each: Effect.Effect<unknown> = Effect.void) =>
  Effect.gen(function* () {
    for (let s = 0; s < seconds; s++) {
      yield* TestClock.adjust("1 second")
      yield* each
    }
  })

const ping = (from: Node, to: number) =>
  Effect.sync(() => {
    assert.isUndefined(from.manager.unsafeSend(id(to), consensus, [Uint8Array.of(to)]))
  })

describe("PeersConfig: connection budget", () => {
  it("fills maxConnections 1024, trimTo 90% of it, idleBeforeTrim 10 s", () => {
    const config = Either.getOrThrow(PeersConfig.decode({}))
    assert.strictEqual(config.maxConnections, 1024)
    assert.strictEqual(config.trimTo, 921)
    assert.strictEqual(Either.getOrThrow(PeersConfig.decode({ maxConnections: 6 })).trimTo, 5)
  })

  it("refuses a trimTo above maxConnections, naming trimTo", () => {
    const result = PeersConfig.decode({ maxConnections: 6, trimTo: 7 })
    assert.isTrue(Either.isLeft(result) && result.left.field === "trimTo", String(result))
  })
})

describe("PeerManager connection budget", () => {
  it.scoped(
    "20 validators, maxConnections 6: after a send to everyone, idle connections are trimmed to the budget and every wanted peer stays connected",
    () =>
      withNetwork(
        {},
        Effect.gen(function* () {
          const members = range(1, 20)
          const nodes = yield* Effect.forEach(members, (n) => startNode(n, members, { maxConnections: 6 }))
          // A ring: each node wants its two neighbours on either side (as tree neighbours want each other).
          const neighbours = (n: number) => [n - 2, n - 1, n + 1, n + 2].map((m) => ((m + 19) % 20) + 1)
          yield* Effect.forEach(members, (n) => nodes[n - 1]!.manager.want("tree", neighbours(n).map(id)))
          yield* tick(3)
          for (const n of members) {
            const connected = yield* connectedTo(nodes[n - 1]!, members)
            assert.deepStrictEqual(
              connected,
              [...neighbours(n)].sort((a, b) => a - b),
              `node ${n}`
            )
          }

          // Everyone sends one message to everyone: dialled on demand, all delivered.
          const sends = yield* Effect.forEach(members, (n) =>
            Effect.fork(
              Effect.forEach(
                members.filter((m) => m !== n),
                (m) =>
                  nodes[n - 1]!.manager.send(id(m), consensus, [Uint8Array.of(n)], {
                    waitForConnection: "10 seconds"
                  }),
                { concurrency: "unbounded", discard: true }
              )
            )
          )
          yield* tick(3)
          for (const fiber of sends) yield* Fiber.join(fiber)
          let most = 0
          for (const n of members) {
            assert.deepStrictEqual(
              received(nodes[n - 1]!, members),
              members.filter((m) => m !== n),
              `node ${n} got one message from every other`
            )
            most = Math.max(most, (yield* nodes[n - 1]!.manager.connected).length)
          }
          assert.isAbove(most, 6, "the sends went over the budget")

          // Idle past idleBeforeTrim (heartbeats flow, and do not count as use): trimmed.
          yield* tick(12)
          const counts: Array<number> = []
          let trimmed = 0
          for (const n of members) {
            const node = nodes[n - 1]!
            const connected = yield* connectedTo(node, members)
            counts.push(connected.length)
            assert.isAtMost(connected.length, 6, `node ${n}: ${connected}`)
            for (const m of neighbours(n)) assert.include(connected, m, `node ${n} keeps wanted ${m}`)
            trimmed += yield* node.manager.trimmed
          }
          assert.isAbove(trimmed, 0)

          // Stable: nothing trimmed is redialled, no churn.
          yield* tick(15)
          let after = 0
          for (const n of members) {
            const node = nodes[n - 1]!
            const connected = yield* connectedTo(node, members)
            assert.deepStrictEqual(connected.length, counts[n - 1], `node ${n}`)
            for (const m of neighbours(n)) assert.include(connected, m)
            after += yield* node.manager.trimmed
          }
          assert.strictEqual(after, trimmed)
        })
      ),
    60_000
  )

  it.scoped(
    "a send to a validator not connected dials it on demand: waitForConnection delivers; unsafeSend fails, then a later one succeeds",
    () =>
      withNetwork(
        {},
        Effect.gen(function* () {
          const members = range(1, 8)
          const nodes = yield* Effect.forEach(members, (n) => startNode(n, members, { maxConnections: 3 }))
          const [a] = nodes
          yield* tick(5)
          assert.deepStrictEqual(
            yield* a!.manager.connected,
            [],
            "budget mode: nothing wanted, nothing dialled"
          )

          const waiting = yield* Effect.fork(
            a!.manager.send(id(5), consensus, [Uint8Array.of(5)], { waitForConnection: "5 seconds" })
          )
          yield* TestClock.adjust("1 second")
          yield* Fiber.join(waiting)
          assert.deepStrictEqual(received(nodes[4]!, members), [1])

          const first = a!.manager.unsafeSend(id(6), consensus, [Uint8Array.of(6)])
          assert.strictEqual(first?._tag, "PeerNotConnected")
          yield* TestClock.adjust("1 second")
          assert.isUndefined(a!.manager.unsafeSend(id(6), consensus, [Uint8Array.of(6)]))
          yield* TestClock.adjust("1 second")
          assert.deepStrictEqual(received(nodes[5]!, members), [1])
          assert.deepStrictEqual(yield* connectedTo(a!, members), [5, 6])
        })
      )
  )

  it.scoped(
    "a connection in use (sent or received) is not trimmed even over budget; one idle is, and a used one once it goes idle",
    () =>
      withNetwork(
        {},
        Effect.gen(function* () {
          const members = range(1, 5)
          const config = { maxConnections: 2, trimTo: 1, idleBeforeTrim: "10 seconds" }
          const nodes = yield* Effect.forEach(members, (n) => startNode(n, members, config))
          const [a, b, c, d, e] = nodes
          const opened = yield* Effect.fork(
            Effect.forEach(
              [2, 3, 4, 5],
              (m) =>
                a!.manager.send(id(m), consensus, [Uint8Array.of(m)], { waitForConnection: "5 seconds" }),
              { discard: true }
            )
          )
          yield* TestClock.adjust("1 second")
          yield* Fiber.join(opened)
          assert.deepStrictEqual(yield* connectedTo(a!, members), [2, 3, 4, 5])

          // Node 1 sends to 2 and 5, and receives from 3, every second; 4 only exchanges heartbeats.
          let toB = true
          const use = Effect.gen(function* () {
            if (toB) yield* ping(a!, 2)
            yield* ping(a!, 5)
            yield* ping(c!, 1)
          })
          yield* tick(30, use)
          assert.deepStrictEqual(yield* connectedTo(a!, members), [2, 3, 5], "all in use: over budget, kept")
          assert.strictEqual(yield* a!.manager.trimmed, 1)
          assert.deepStrictEqual(yield* connectedTo(d!, members), [], "4 was trimmed, and not redialled")

          // Node 2 falls idle: trimmed once idleBeforeTrim has passed, not before.
          toB = false
          yield* tick(8, use)
          assert.deepStrictEqual(yield* connectedTo(a!, members), [2, 3, 5])
          yield* tick(4, use)
          assert.deepStrictEqual(yield* connectedTo(a!, members), [3, 5])
          assert.strictEqual(yield* a!.manager.trimmed, 2)
          assert.deepStrictEqual(yield* connectedTo(b!, members), [])
          assert.deepStrictEqual(yield* connectedTo(e!, members), [1])
          for (const node of [b, c, d, e]) assert.strictEqual(yield* node!.manager.trimmed, 0)
        })
      ),
    30_000
  )

  it.scoped(
    "a budget at or above the set size keeps the full mesh: every pair connected, nothing trimmed",
    () =>
      withNetwork(
        {},
        Effect.gen(function* () {
          const members = range(1, 5)
          // Four other validators each: exactly the budget.
          const nodes = yield* Effect.forEach(members, (n) =>
            startNode(n, members, { maxConnections: 4, trimTo: 0, idleBeforeTrim: "1 second" })
          )
          yield* nodes[0]!.manager.want("tree", [id(2)])
          yield* tick(15)
          for (const [i, node] of nodes.entries()) {
            assert.deepStrictEqual(
              yield* connectedTo(node, members),
              members.filter((m) => m !== i + 1),
              `node ${i + 1}`
            )
          }
          yield* tick(30)
          for (const [i, node] of nodes.entries()) {
            assert.strictEqual((yield* node.manager.connected).length, 4, `node ${i + 1}`)
            assert.strictEqual(yield* node.manager.trimmed, 0)
          }
        })
      )
  )

  it.scoped(
    "changing want moves connections: the newly wanted are dialled, the no longer wanted trimmed once idle, never redialled",
    () =>
      withNetwork(
        {},
        Effect.gen(function* () {
          const members = range(1, 8)
          const nodes = yield* Effect.forEach(members, (n) =>
            startNode(n, members, { maxConnections: 3, trimTo: 2 })
          )
          const [a] = nodes
          const want = (tag: string, peers: ReadonlyArray<number>) => a!.manager.want(tag, peers.map(id))
          yield* want("tree", [2, 3])
          yield* want("leaders", [4])
          yield* tick(2)
          assert.deepStrictEqual(yield* connectedTo(a!, members), [2, 3, 4])

          // The next view's tree: 5 and 6 dialled; 2 and 3 over budget, kept idleBeforeTrim after release.
          yield* want("tree", [5, 6])
          yield* tick(2)
          assert.deepStrictEqual(yield* connectedTo(a!, members), [2, 3, 4, 5, 6])
          yield* tick(10)
          assert.deepStrictEqual(yield* connectedTo(a!, members), [4, 5, 6])
          assert.strictEqual(yield* a!.manager.trimmed, 2)

          // The leaders' tag cleared: 4 may be trimmed, but 3 connections are within the budget.
          yield* want("leaders", [])
          yield* tick(30)
          assert.deepStrictEqual(yield* connectedTo(a!, members), [4, 5, 6])
          assert.strictEqual(yield* a!.manager.trimmed, 2)
          for (const n of [2, 3]) assert.deepStrictEqual(yield* connectedTo(nodes[n - 1]!, members), [])

          // One more wanted puts it over again: 4, idle and unwanted, is the one trimmed.
          yield* want("tree", [5, 6, 7])
          yield* tick(2)
          assert.deepStrictEqual(yield* connectedTo(a!, members), [5, 6, 7])
          assert.strictEqual(yield* a!.manager.trimmed, 3)
        })
      ),
    30_000
  )
})
