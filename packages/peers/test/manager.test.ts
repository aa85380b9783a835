import { assert, describe, it } from "@effect/vitest"
import { MemoryTransport, SimulatedNetwork, Transport, TransportConfig } from "@hotstuff2/transport"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Stream from "effect/Stream"
import * as TestClock from "effect/TestClock"
import {
  address,
  disconnections,
  host,
  identity,
  NETWORK,
  startNode,
  withNetwork
} from "./fixtures/cluster.js"

const { consensus } = TransportConfig.Channel

/**
 * The dial schedule, restated: on the ring of `members` in PeerId order, `a` dials `b` first when
 * `b` is in the half of the ring after `a` (at exactly half way, the smaller PeerId).
 */
const dialsFirst = (members: ReadonlyArray<number>, a: number, b: number): boolean => {
  const ring = members.map((n) => identity(n).peerId).sort()
  const [ia, ib] = [ring.indexOf(identity(a).peerId), ring.indexOf(identity(b).peerId)]
  const ahead = (ib - ia + ring.length) % ring.length
  return 2 * ahead < ring.length || (2 * ahead === ring.length && identity(a).peerId < identity(b).peerId)
}
const B = () => identity(2).peerId

/** Advances the TestClock in `step` ms steps for `total` ms, sampling `probe` after each. */
const sample = <A>(total: number, step: number, probe: Effect.Effect<A>) =>
  Effect.gen(function* () {
    const out: Array<{ readonly at: number; readonly value: A }> = []
    for (let t = step; t <= total; t += step) {
      yield* TestClock.adjust(`${step} millis`)
      out.push({ at: t, value: yield* probe })
    }
    return out
  })

/** Times (ms) at which node 1's failed dials to node 2 happened, from the registry's failure count. */
const failureTimes = (samples: ReadonlyArray<{ readonly at: number; readonly value: number }>) => {
  const times: Array<number> = []
  let last = 0
  for (const s of samples) {
    for (let i = last; i < s.value; i++) times.push(s.at)
    last = s.value
  }
  return times
}

describe("PeerManager under TestClock", () => {
  it.scoped(
    "redials with exponential delays within jitter bounds, and starts over after a stable connection",
    () =>
      withNetwork(
        {},
        Effect.gen(function* () {
          const config = { redialBase: 100, redialFactor: 2, redialCap: 2000, stableAfter: 1000 }
          const a = yield* startNode(1, [1, 2], config)
          const failures = a.registry
            .get(B())
            .pipe(Effect.map(Option.match({ onNone: () => 0, onSome: (p) => p.consecutiveFailures })))
          const times = failureTimes(yield* sample(5000, 5, failures))
          // Attempt k+1 comes (0.8..1.2) x 100 x 2^k ms after attempt k, at most 2 s after it.
          assert.isAtLeast(times.length, 6)
          for (let k = 0; k + 1 < times.length; k++) {
            const gap = times[k + 1]! - times[k]!
            const expected = Math.min(100 * 2 ** k, 2000)
            assert.isAtLeast(gap, Math.floor(Math.min(expected * 0.8, 2000)) - 5, `gap ${k}: ${gap}`)
            assert.isAtMost(gap, Math.min(expected * 1.2, 2000) + 5, `gap ${k}: ${gap}`)
          }
          // Node 2 comes up: node 1 connects at its next attempt, within the 2 s cap.
          const b = yield* startNode(2, [1, 2], config)
          yield* TestClock.adjust("2100 millis")
          assert.deepStrictEqual(yield* a.manager.connected, [B()])
          // Stable for longer than `stableAfter`, then node 2 dies: the schedule starts over from 100 ms.
          yield* TestClock.adjust("1500 millis")
          yield* b.stop
          const after = failureTimes(yield* sample(400, 5, failures))
          assert.isAtLeast(after.length, 2, `failures after the stop: ${after}`)
          const gap = after[1]! - after[0]!
          assert.isAtLeast(gap, 75)
          assert.isAtMost(gap, 125)
        })
      )
  )

  it.scoped("closes a connection after k missed heartbeats, then redials once the peer is back", () =>
    withNetwork(
      {},
      Effect.gen(function* () {
        const network = yield* SimulatedNetwork.SimulatedNetwork
        const config = { heartbeatInterval: 1000, missedHeartbeats: 3, redialCap: 1000 }
        const a = yield* startNode(1, [1, 2], config)
        // Node 2 is more patient, so that node 1's own heartbeat is what notices the silence.
        yield* startNode(2, [1, 2], { ...config, missedHeartbeats: 10 })
        yield* TestClock.adjust("500 millis") // node 1's first dial found nobody: its retry connects
        assert.deepStrictEqual(yield* a.manager.connected, [B()])
        yield* TestClock.adjust("2500 millis") // heartbeats flowing: RTT measured
        const before = yield* a.registry.get(B())
        assert.isTrue(Option.isSome(before) && before.value.rtt !== undefined, "an RTT was measured")

        const events = yield* a.manager.events.pipe(
          Stream.filter((e) => e._tag === "Disconnected"),
          Stream.take(1),
          Stream.runCollect,
          Effect.fork
        )
        yield* network.partition([[host(1)], [host(2)]])
        yield* TestClock.adjust("2500 millis")
        assert.isNull(events.unsafePoll(), "still connected 2.5 intervals after the peer went silent")
        yield* TestClock.adjust("1500 millis")
        const [disconnected] = yield* Fiber.join(events)
        assert.isTrue(disconnected?._tag === "Disconnected" && /unhealthy/.test(disconnected.reason))
        assert.deepStrictEqual(yield* a.manager.connected, [])
        // One episode, one Timeout (-5): the close in progress is not counted again.
        yield* TestClock.adjust("2 seconds")
        assert.approximately(Option.getOrThrow(yield* a.registry.get(B())).score, -5, 0.1)

        yield* network.heal
        yield* TestClock.adjust("7 seconds") // the dial across the partition times out (5 s), then redial
        assert.deepStrictEqual(yield* a.manager.connected, [B()])
      })
    )
  )

  it.scoped(
    "started at once, each pair is dialled by one side only, the ring's first dialler; each node dials half of the others",
    () =>
      withNetwork(
        { defaults: { latency: 5 } },
        Effect.gen(function* () {
          const members = [1, 2, 3, 4, 5]
          const nodes = yield* Effect.forEach(members, (n) => startNode(n, members, { dialGrace: 2000 }))
          yield* TestClock.adjust("500 millis")
          // Whether a node's registry records a successful dial to the other's address.
          const dialled = (from: number, to: number) =>
            Effect.map(nodes[from]!.registry.get(identity(members[to]!).peerId), (state) =>
              Option.getOrThrow(state).addresses.some((a) => a.lastSuccess !== undefined)
            )
          const check = Effect.gen(function* () {
            for (let i = 0; i < members.length; i++) {
              assert.strictEqual((yield* nodes[i]!.manager.connected).length, 4, `node ${members[i]}`)
              let dials = 0
              for (let j = 0; j < members.length; j++) {
                if (i === j) continue
                const first = dialsFirst(members, members[i]!, members[j]!)
                assert.strictEqual(
                  yield* dialled(i, j),
                  first,
                  `${members[i]} dialled ${members[j]}: ${!first}`
                )
                if (first) dials++
              }
              // Five on the ring: two each (in PeerId order alone the smallest would dial all four).
              assert.strictEqual(dials, 2, `node ${members[i]} dials first`)
            }
          })
          yield* check
          // Past the grace nothing changes: the waiting side found its connection there and never dialled.
          yield* TestClock.adjust("10 seconds")
          yield* check
        })
      )
  )

  it.scoped(
    "the waiting side's grace lasts while other first dials keep arriving, and ends when they stop",
    () =>
      withNetwork(
        {},
        Effect.gen(function* () {
          // On a ring of seven, the largest PeerId waits for the three peers that dial it first. Two
          // come up 1.5 s apart: the second's dial arrives after the 2 s grace, but within 2 s of
          // the first's. The third stays down, so the grace has to end.
          const members = [1, 2, 3, 4, 5, 6, 7]
          const ids = members
            .map((n) => ({ n, id: identity(n).peerId }))
            .sort((a, b) => (a.id < b.id ? -1 : 1))
          const waiter = ids[6]!.n
          const waitedFor = members.filter((n) => n !== waiter && dialsFirst(members, n, waiter))
          assert.strictEqual(waitedFor.length, 3)
          const [late, ...others] = waitedFor.reverse()
          const config = { dialGrace: 2000, maxConcurrentDials: 8, redialCap: 30_000 }
          const node = yield* startNode(waiter, members, config)
          const failures = (n: number) =>
            Effect.map(node.registry.get(identity(n).peerId), (state) =>
              Option.match(state, {
                onNone: () => 0,
                onSome: (p) => p.addresses.reduce((a, x) => a + x.failures, 0)
              })
            )
          for (const n of others) {
            yield* TestClock.adjust("1500 millis")
            yield* startNode(n, members, config)
            yield* TestClock.adjust("10 millis")
          }
          // 3 s in: past the grace, but the others' dials came within it: still waiting, no dial.
          assert.strictEqual(yield* failures(late!), 0, `dialled ${late} while first dials were arriving`)
          yield* TestClock.adjust("1500 millis")
          // It sees the dials of all but `late`; `late` never dials, so the grace runs out after
          // the last arrival and the waiting side dials `late` itself (refused: it is down).
          yield* TestClock.adjust("3 seconds")
          assert.isAtLeast(yield* failures(late!), 1, `never dialled ${late} once the first dials stopped`)
        })
      )
  )

  it.scoped(
    "keeps exactly one connection per pair when both dial at the same instant, the same one on both sides",
    () =>
      withNetwork(
        { defaults: { latency: 5 } },
        Effect.gen(function* () {
          const members = [1, 2, 3, 4]
          // No grace: both sides of every pair dial at the same instant.
          const nodes = yield* Effect.forEach(members, (n) => startNode(n, members, { dialGrace: 0 }))
          yield* TestClock.adjust("500 millis")
          for (const [i, node] of nodes.entries()) {
            assert.strictEqual((yield* node.manager.connected).length, 3, `node ${i + 1}`)
          }
          // Every pair agrees on the connection: the one dialled by the smaller PeerId.
          for (const [i, node] of nodes.entries()) {
            for (const [j, other] of nodes.entries()) {
              if (i === j) continue
              const mine = Option.getOrThrow(yield* node.manager.connection(identity(members[j]!).peerId))
              const theirs = Option.getOrThrow(yield* other.manager.connection(identity(members[i]!).peerId))
              assert.notStrictEqual(mine.direction, theirs.direction)
              const dialer =
                mine.direction === "outbound" ? identity(members[i]!).peerId : identity(members[j]!).peerId
              const smaller = [identity(members[i]!).peerId, identity(members[j]!).peerId].sort()[0]
              assert.strictEqual(dialer, smaller)
            }
          }
        })
      )
  )

  it.scoped("penalises and bans a flooding peer, closes it, and keeps traffic among the others flowing", () =>
    withNetwork(
      {},
      Effect.gen(function* () {
        const config = {
          rateLimits: [
            { channel: consensus, messagesPerSecond: 100, bytesPerSecond: 1_000_000, burstSeconds: 1 }
          ],
          rateLimitReportInterval: 50,
          banBase: 60_000
        }
        const members = [1, 2, 3]
        const [a, flooder, good] = yield* Effect.forEach(members, (n) => startNode(n, members, config))
        yield* TestClock.adjust("100 millis")
        let fromGood = 0
        yield* a!.manager.inbound.pipe(
          Stream.runForEach((f) =>
            Effect.sync(() => {
              if (f.peer === identity(3).peerId) fromGood++
            })
          ),
          Effect.forkScoped
        )
        // The flooder sends 1,000 frames per 10 ms tick; the good peer 1 frame per 50 ms.
        for (let tick = 0; tick < 120; tick++) {
          for (let i = 0; i < 1000; i++) {
            yield* Effect.ignore(flooder!.manager.send(identity(1).peerId, consensus, [Uint8Array.of(1)]))
          }
          if (tick % 5 === 0)
            yield* Effect.ignore(good!.manager.send(identity(1).peerId, consensus, [Uint8Array.of(3)]))
          yield* TestClock.adjust("10 millis")
        }
        assert.isTrue(yield* a!.registry.isBanned(identity(2).peerId), "the flooder is banned")
        assert.isFalse(yield* a!.registry.isBanned(identity(3).peerId))
        assert.deepStrictEqual(yield* a!.manager.connected, [identity(3).peerId])
        assert.strictEqual(fromGood, 24, "the good peer's frames all arrived")
      })
    )
  )

  it.scoped("send to a disconnected peer fails at once, or waits for the connection when asked", () =>
    withNetwork(
      {},
      Effect.gen(function* () {
        const a = yield* startNode(1, [1, 2])
        const now = yield* Effect.flip(a.manager.send(B(), consensus, [Uint8Array.of(1)]))
        assert.strictEqual(now._tag, "PeerNotConnected")
        const waiting = yield* Effect.fork(
          a.manager.send(B(), consensus, [Uint8Array.of(1)], { waitForConnection: "5 seconds" })
        )
        yield* startNode(2, [1, 2])
        yield* TestClock.adjust("2 seconds")
        yield* Fiber.join(waiting)
        const timedOut = yield* Effect.fork(
          Effect.flip(
            a.manager.send(identity(9).peerId, consensus, [Uint8Array.of(1)], {
              waitForConnection: "1 second"
            })
          )
        )
        yield* TestClock.adjust("1 second")
        assert.strictEqual((yield* Fiber.join(timedOut))._tag, "PeerNotConnected")
      })
    )
  )

  it.scoped("a slow consumer never gets an honest peer penalised: the busy peer waits, the others flow", () =>
    withNetwork(
      {},
      Effect.gen(function* () {
        const config = { inboundFramesPerPeer: 64 }
        const members = [1, 2, 3]
        const [a, busy, honest] = yield* Effect.forEach(members, (n) => startNode(n, members, config))
        yield* TestClock.adjust("500 millis")
        const dropsA = yield* disconnections(a!.registry)
        const dropsBusy = yield* disconnections(busy!.registry)
        // Node 1's application does not read at all for 30 s; node 2 sends a lot, node 3 a little.
        for (let second = 0; second < 30; second++) {
          for (let i = 0; i < 200; i++)
            yield* Effect.ignore(busy!.manager.send(identity(1).peerId, consensus, [Uint8Array.of(2)]))
          yield* Effect.ignore(honest!.manager.send(identity(1).peerId, consensus, [Uint8Array.of(3)]))
          yield* TestClock.adjust("1 second")
        }
        for (const n of [2, 3]) {
          const state = Option.getOrThrow(yield* a!.registry.get(identity(n).peerId))
          assert.strictEqual(state.score, 0, `node ${n} was penalised for node 1's slowness`)
          assert.isTrue(Option.isNone(state.ban), `node ${n} is not banned`)
        }
        // Both stay connected, and neither side dropped the other: a slow consumer is not a dead
        // peer (heartbeat.test.ts holds a reader back until the socket pauses and checks the same).
        for (const n of [2, 3]) {
          const state = Option.getOrThrow(yield* a!.registry.get(identity(n).peerId))
          assert.strictEqual(state.connection, "connected", `node ${n}`)
        }
        assert.deepStrictEqual(dropsA, [], "node 1 kept both")
        assert.deepStrictEqual(dropsBusy, [], "node 2 kept node 1")
        // Once node 1 reads, node 3's frames are there, not starved behind node 2's.
        // 40 frames are already waiting (node 2's queue is full, node 3 sent 30): round-robin gives
        // about 20 of each. Delivering more takes simulated time, so the clock moves while reading.
        const reading = yield* a!.manager.inbound.pipe(Stream.take(40), Stream.runCollect, Effect.fork)
        yield* TestClock.adjust("1 second")
        const first = yield* Fiber.join(reading)
        assert.isTrue(
          [...first].some((f) => f.peer === identity(3).peerId),
          "round-robin serves node 3"
        )
      })
    )
  )

  it.scoped("a peer that accepts and drops at once is redialled on the backoff schedule, not in a loop", () =>
    withNetwork(
      {},
      Effect.gen(function* () {
        // Node 2 is a bare transport that closes every connection as soon as it is made.
        const b = yield* Layer.build(
          MemoryTransport.layer({ identity: identity(2), config: { networkId: NETWORK } })
        ).pipe(Effect.map((c) => Context.get(c, Transport.Transport)))
        const listener = yield* b.listen(address(2))
        let accepted = 0
        yield* listener.connections.pipe(
          Stream.runForEach((c) =>
            Effect.suspend(() => {
              accepted += 1
              return c.close({ reason: "go away" })
            })
          ),
          Effect.forkScoped
        )
        yield* startNode(1, [1, 2], { redialBase: 100, redialCap: 1000 })
        yield* TestClock.adjust("3 seconds")
        // 100, 200, 400, 800, then 1000 ms apart (jittered): about 6 in 3 s. Hundreds without backoff.
        assert.isAtLeast(accepted, 3)
        assert.isAtMost(accepted, 9, `${accepted} connections in 3 s`)
      })
    )
  )

  it.scoped("reconnecting does not refill a peer's rate-limit bucket", () =>
    withNetwork(
      {},
      Effect.gen(function* () {
        const config = {
          rateLimits: [
            { channel: consensus, messagesPerSecond: 10, bytesPerSecond: 1_000_000, burstSeconds: 10 }
          ],
          rateLimitReportInterval: 60_000
        }
        const a = yield* startNode(1, [1, 2], config)
        const received = yield* a.manager.inbound.pipe(
          Stream.runForEach((frame) =>
            Effect.sync(() => {
              count += frame.messages.length
            })
          ),
          Effect.forkScoped
        )
        let count = 0
        void received
        for (let round = 0; round < 3; round++) {
          const b = yield* startNode(2, [1, 2], config)
          yield* TestClock.adjust("300 millis")
          for (let i = 0; i < 100; i++)
            yield* Effect.ignore(b.manager.send(identity(1).peerId, consensus, [Uint8Array.of(1)]))
          yield* TestClock.adjust("100 millis")
          yield* b.stop
        }
        // The bucket holds 100 and refills 10/s: about 100 + 10 x 1.2 s get through, not 300.
        assert.isAtMost(count, 120, `${count} messages passed the limit`)
        assert.isAtLeast(count, 100)
      })
    )
  )

  it.scoped("a frame joined from many sends is cut where the rate limit runs out, not dropped whole", () =>
    withNetwork(
      {},
      Effect.gen(function* () {
        // The bucket holds 10 messages. B's 25 sends of one turn leave as two frames (the first
        // alone, the other 24 joined): the first 10 messages pass, in order; the rest are dropped.
        const config = {
          rateLimits: [
            { channel: consensus, messagesPerSecond: 10, bytesPerSecond: 1_000_000, burstSeconds: 1 }
          ],
          rateLimitReportInterval: 60_000
        }
        const a = yield* startNode(1, [1, 2], config)
        const b = yield* startNode(2, [1, 2], config)
        yield* TestClock.adjust("300 millis")
        const got: Array<number> = []
        yield* a.manager.inbound.pipe(
          Stream.runForEach((frame) => Effect.sync(() => got.push(...frame.messages.map((m) => m[0]!)))),
          Effect.forkScoped
        )
        yield* Effect.sync(() => {
          for (let i = 0; i < 25; i++)
            assert.isUndefined(b.manager.unsafeSend(identity(1).peerId, consensus, [Uint8Array.of(i)]))
        })
        yield* TestClock.adjust("10 millis")
        assert.deepStrictEqual(got, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9])
        const report = Option.getOrThrow(yield* a.registry.get(B()))
        assert.isBelow(report.score, 0, "the flood cost B reputation")
      })
    )
  )

  it.scoped("a dial that reaches another key lowers that address's health, not the peer's reputation", () =>
    withNetwork(
      {},
      Effect.gen(function* () {
        // Validator 2's configured address is where node 3 listens (a stale address).
        const wrong = [
          { id: identity(1).peerId, addresses: [address(1)] },
          { id: identity(2).peerId, addresses: [address(3)] },
          { id: identity(3).peerId, addresses: [address(3)] }
        ]
        const a = yield* startNode(1, [1, 2, 3], {}, wrong)
        yield* startNode(3, [1, 3])
        yield* TestClock.adjust("5 seconds")
        const state = Option.getOrThrow(yield* a.registry.get(B()))
        assert.isAtLeast(state.consecutiveFailures, 3)
        assert.strictEqual(state.score, 0)
        assert.isFalse(yield* a.registry.isBanned(B()))
      })
    )
  )
})
