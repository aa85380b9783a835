// The dial window: how many dials a node runs at once. Slow or timed-out dials halve it (once per
// round of dials), fast ones grow it back, within 1..maxConcurrentDials. Then on the simulated
// network under TestClock: a node whose dials are slow runs fewer at once, and still connects to
// every peer.
import { assert, describe, it } from "@effect/vitest"
import { MemoryTransport, Transport } from "@hotstuff2/transport"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Scope from "effect/Scope"
import * as TestClock from "effect/TestClock"
import { DialWindow } from "../src/internal/dialWindow.js"
import {
  address,
  buildNode,
  identity,
  NETWORK,
  startNode,
  validators,
  withNetwork
} from "./fixtures/cluster.js"

describe("DialWindow", () => {
  it("starts at the maximum and keeps it while dials are fast", () => {
    const window = new DialWindow(8, 3000)
    assert.strictEqual(window.permits, 8)
    for (let t = 0; t < 100; t++) assert.isFalse(window.ended(t, t + 50, false))
    assert.strictEqual(window.permits, 8)
  })

  it("halves on a slow dial or a timeout, once per round: dials started before the halving do not halve it again", () => {
    const window = new DialWindow(8, 3000)
    // Eight dials start at 0; the first ends slow at 3500 and halves the window.
    assert.isTrue(window.ended(0, 3500, false))
    assert.strictEqual(window.permits, 4)
    // The other seven of that round end slow or time out too: they ran in the window just halved.
    for (let i = 0; i < 6; i++) assert.isFalse(window.ended(0, 3600 + i, false))
    assert.isFalse(window.ended(0, 5000, true))
    assert.strictEqual(window.permits, 4)
    // A dial started after the halving that times out halves it again, down to one at the least.
    assert.isTrue(window.ended(4000, 9000, true))
    assert.strictEqual(window.permits, 2)
    window.ended(9500, 14_500, true)
    window.ended(15_000, 20_000, true)
    window.ended(21_000, 26_000, true)
    assert.strictEqual(window.permits, 1)
  })

  it("grows back by about one per window of fast dials, up to the maximum", () => {
    const window = new DialWindow(8, 3000)
    window.ended(0, 3500, false)
    assert.strictEqual(window.permits, 4)
    // A window of fast dials adds about one (each adds 1/size: five here, as the size grows).
    for (let i = 0; i < 4; i++) window.ended(4000 + i, 4100 + i, false)
    assert.strictEqual(window.permits, 4)
    window.ended(4004, 4104, false)
    assert.strictEqual(window.permits, 5)
    for (let i = 0; i < 200; i++) window.ended(5000 + i, 5100 + i, false)
    assert.strictEqual(window.permits, 8)
  })
})

describe("PeerManager dial window under TestClock", () => {
  it.scoped("a node whose dials are slow runs fewer at once, and still connects to every peer", () =>
    withNetwork(
      // 700 ms each way: a handshake (connect, hellos, auths) takes a few seconds, over `slowDialAfter`.
      { defaults: { latency: 700 } },
      Effect.gen(function* () {
        const others = Array.from({ length: 24 }, (_, i) => i + 2)
        // The others admit node 1 without dialling it: every connection is one of node 1's dials.
        for (const n of others) yield* startNode(n, others, { admitNonValidators: true })
        let inFlight = 0
        let ended = 0
        let maxBeforeAnyEnded = 0
        let maxAfterFirstRound = 0
        const counting = Layer.effect(
          Transport.Transport,
          Effect.map(Transport.Transport, (inner) => ({
            ...inner,
            dial: (to: string, peer: Transport.Expected) =>
              Effect.suspend(() => {
                inFlight++
                if (ended === 0) maxBeforeAnyEnded = Math.max(maxBeforeAnyEnded, inFlight)
                // Past the first round of eight, the window has seen their slow ends.
                if (ended >= 8) maxAfterFirstRound = Math.max(maxAfterFirstRound, inFlight)
                return inner.dial(to, peer)
              }).pipe(
                Effect.ensuring(
                  Effect.sync(() => {
                    inFlight--
                    ended++
                  })
                )
              )
          }))
        ).pipe(
          Layer.provide(MemoryTransport.layer({ identity: identity(1), config: { networkId: NETWORK } }))
        )
        const node = yield* buildNode(
          {
            n: 1,
            listen: address(1),
            validators: validators([1, ...others]),
            config: { dialGrace: 0, maxConcurrentDials: 8, slowDialAfter: 1000 },
            transport: counting
          },
          yield* Scope.make()
        )
        yield* TestClock.adjust("60 seconds")
        assert.strictEqual((yield* node.manager.connected).length, others.length)
        assert.strictEqual(maxBeforeAnyEnded, 8, "starts with maxConcurrentDials")
        assert.isAtLeast(maxAfterFirstRound, 1)
        assert.isAtMost(maxAfterFirstRound, 4, "after slow dials, at most half of maxConcurrentDials at once")
      })
    )
  )
})
