import { assert, describe, it } from "@effect/vitest"
import { SimulatedNetwork, TransportConfig } from "@hotstuff2/transport"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as Option from "effect/Option"
import * as Stream from "effect/Stream"
import * as TestClock from "effect/TestClock"
import { host, identity, startNode, withNetwork } from "./fixtures/cluster.js"

const { consensus } = TransportConfig.Channel
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

        yield* network.heal
        yield* TestClock.adjust("7 seconds") // the dial across the partition times out (5 s), then redial
        assert.deepStrictEqual(yield* a.manager.connected, [B()])
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
          const nodes = yield* Effect.forEach(members, (n) => startNode(n, members))
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
        const received = yield* a!.manager.inbound.pipe(
          Stream.filter((f) => f.peer === identity(3).peerId),
          Stream.take(20),
          Stream.runCollect,
          Effect.fork
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
        assert.strictEqual((yield* Fiber.join(received)).length, 20, "the good peer's frames all arrived")
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
})
