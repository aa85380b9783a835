// The redial schedule is jittered: under TestClock, with a seeded Random, a node's redials of two
// absent validators (one schedule each) keep neither the un-jittered exponential delays nor step
// with each other. Without jitter every dialer of the network would redial a peer in lockstep.
import { assert, describe, it } from "@effect/vitest"
import { MemoryTransport, Transport } from "@hotstuff2/transport"
import * as Clock from "effect/Clock"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Random from "effect/Random"
import * as Scope from "effect/Scope"
import * as TestClock from "effect/TestClock"
import { address, buildNode, identity, NETWORK, validators, withNetwork } from "./fixtures/cluster.js"

const BASE = 100
const FACTOR = 2
/** Far above the delays reached here: every delay is on the exponential part of the schedule. */
const CAP = 60_000

/** Node `n`'s transport on the simulated network, recording when (Clock time) it dials each peer. */
const recordingTransport = (n: number, dials: Map<string, Array<number>>) =>
  Layer.effect(
    Transport.Transport,
    Effect.map(Transport.Transport, (inner) => ({
      ...inner,
      dial: (to: string, peer: Transport.Expected) =>
        Effect.zipRight(
          Effect.flatMap(Clock.currentTimeMillis, (at) =>
            Effect.sync(() => {
              const key = Transport.describeExpected(peer)
              dials.set(key, [...(dials.get(key) ?? []), at])
            })
          ),
          inner.dial(to, peer)
        )
    }))
  ).pipe(Layer.provide(MemoryTransport.layer({ identity: identity(n), config: { networkId: NETWORK } })))

const gaps = (times: ReadonlyArray<number>) => times.slice(1).map((t, k) => t - times[k]!)

describe("PeerManager redial schedule", () => {
  it.scoped(
    "is jittered: delays are not the bare exponential ones, and two peers' redials do not step together",
    () =>
      withNetwork(
        {},
        Effect.gen(function* () {
          const dials = new Map<string, Array<number>>()
          // Node 1 among validators 1, 2 and 3; 2 and 3 never start, so every dial to them fails at once.
          const scope = yield* Effect.acquireRelease(Scope.make(), (scope, exit) => Scope.close(scope, exit))
          yield* buildNode(
            {
              n: 1,
              listen: address(1),
              validators: validators([1, 2, 3]),
              config: { redialBase: BASE, redialFactor: FACTOR, redialCap: CAP, dialGrace: 0 },
              transport: recordingTransport(1, dials)
            },
            scope
          ).pipe(Effect.withRandom(Random.make("redial jitter")))
          // 100 + 200 + ... + 6400 ms = 12.7 s un-jittered (at most 15.24 s jittered): 8 dials each.
          yield* TestClock.adjust("16 seconds")

          const perPeer = [2, 3].map((n) => gaps(dials.get(identity(n).peerId) ?? []))
          for (const [i, g] of perPeer.entries()) {
            assert.isAtLeast(g.length, 7, `node ${i + 2} was redialled: ${g}`)
            for (const [k, gap] of g.entries()) {
              const bare = BASE * FACTOR ** k
              // Jitter scales each delay by a factor in [0.8, 1.2].
              assert.isAtLeast(gap, bare * 0.8 - 1e-6, `gap ${k} to node ${i + 2}: ${g}`)
              assert.isAtMost(gap, bare * 1.2 + 1e-6, `gap ${k} to node ${i + 2}: ${g}`)
            }
            assert.isFalse(
              g.every((gap, k) => Math.abs(gap - BASE * FACTOR ** k) < 1),
              `node ${i + 2}'s delays are the un-jittered 100 x 2^k ms: ${g}`
            )
          }
          const [to2, to3] = perPeer.map((g) => g.slice(0, 7))
          assert.notDeepEqual(to2, to3, "the two schedules draw their own jitter")
        })
      )
  )
})
