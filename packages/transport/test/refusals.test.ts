// What a listener does with the attempts it refuses: counts them by reason, logs a flood of them as
// one line per `refusalLogInterval`, and keeps handshake slots for the hosts it reserves them for
// (validators'), so that a flood of unfinished handshakes from other hosts cannot keep them out.
// On the simulated network under TestClock.
import { assert, describe, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Fiber from "effect/Fiber"
import * as Logger from "effect/Logger"
import * as TestClock from "effect/TestClock"
import { SimulatedNetwork } from "../src/index.js"
import { type ConfigOverrides, memoryTransport, withNetwork } from "./fixtures/harness.js"
import { identity } from "./fixtures/identities.js"

/** Runs `effect`, moving the TestClock 10 ms at a time until it is done (at most 60 s). */
const settle = <A, E, R>(effect: Effect.Effect<A, E, R>) =>
  Effect.gen(function* () {
    const fiber = yield* Effect.fork(effect)
    for (let i = 0; i < 6000; i++) {
      const done = yield* Fiber.poll(fiber)
      if (done._tag === "Some") return yield* done.value
      yield* TestClock.adjust("10 millis")
    }
    return yield* Effect.dieMessage("not done within 60 s of clock time")
  })

const transportOn = (n: number, host: string, config: ConfigOverrides = {}) =>
  memoryTransport(identity(n), config, host)

describe("a listener's refusals", () => {
  it.scoped("are counted by reason, and a flood of them is logged as one line per interval", () => {
    const lines: Array<string> = []
    const capture = Logger.replace(
      Logger.defaultLogger,
      Logger.make(({ message, annotations }) => {
        const text = Array.isArray(message) ? message.join(" ") : String(message)
        const reason = [...annotations].find(([key]) => key === "reason")?.[1]
        lines.push(`${text}${reason === undefined ? "" : ` [${String(reason)}]`}`)
      })
    )
    return withNetwork(
      { seed: 3 },
      Effect.gen(function* () {
        const listening = yield* transportOn(1, "listener", { refusalLogInterval: "10 seconds" })
        const listener = yield* listening.listen("listener:9000")
        // Another network's node: each of its dials is refused as wrong-network.
        const stranger = yield* transportOn(2, "stranger", { networkId: "another-network" })
        for (let i = 0; i < 20; i++) {
          const dialed = yield* settle(Effect.either(stranger.dial("listener:9000", identity(1).peerId)))
          assert.isTrue(Either.isLeft(dialed))
        }
        yield* TestClock.adjust("1 millis")
        assert.deepStrictEqual(yield* listener.refused, { "wrong-network": 20 })
        const refusedLines = () => lines.filter((l) => l.includes("refused"))
        assert.deepStrictEqual(
          refusedLines(),
          ["inbound connection refused [wrong-network]"],
          "the first refusal at once, the rest counted"
        )
        yield* TestClock.adjust("10 seconds")
        assert.strictEqual(refusedLines().length, 2)
        assert.match(
          refusedLines()[1]!,
          /^19 more inbound connections refused within 10s \(wrong-network: 19\)/
        )
        // Quiet for an interval: the next refusal is logged at once again.
        yield* TestClock.adjust("10 seconds")
        yield* settle(Effect.either(stranger.dial("listener:9000", identity(1).peerId)))
        assert.strictEqual(refusedLines().length, 3)
        assert.deepStrictEqual(yield* listener.refused, { "wrong-network": 21 })
      })
    ).pipe(Effect.provide(capture))
  })

  for (const reserving of [true, false]) {
    it.scoped(
      `with ${reserving ? "" : "no "}slots reserved for a validator's host, slowloris from 20 hosts ${reserving ? "does not keep" : "keeps"} the validator out`,
      () =>
        withNetwork(
          { seed: 3 },
          Effect.gen(function* () {
            const network = yield* SimulatedNetwork.SimulatedNetwork
            const listening = yield* transportOn(1, "victim", {
              maxConcurrentHandshakes: 8,
              reservedHandshakes: 2,
              handshakeTimeout: "30 seconds"
            })
            const listener = yield* listening.listen("victim:9000", {
              ...(reserving ? { reserved: (host: string) => host === "validator" } : {})
            })
            // Connections that never say a word, one per host: they hold handshake slots until
            // the handshake timeout.
            for (let i = 0; i < 20; i++) yield* network.connect(`attacker-${i}`, "victim:9000")
            yield* TestClock.adjust("100 millis")
            const refused = yield* listener.refused
            assert.strictEqual(refused["over-limit"], reserving ? 14 : 12, "the unreserved slots are full")

            const validator = yield* transportOn(2, "validator")
            const fromValidator = yield* settle(
              Effect.either(validator.dial("victim:9000", identity(1).peerId))
            )
            const outsider = yield* transportOn(3, "outsider")
            const fromOutsider = yield* settle(
              Effect.either(outsider.dial("victim:9000", identity(1).peerId))
            )
            assert.isTrue(Either.isLeft(fromOutsider), "another host finds every slot it may use taken")
            assert.strictEqual(
              Either.isRight(fromValidator),
              reserving,
              reserving ? "the validator's host uses a reserved slot" : "the validator finds every slot taken"
            )
            assert.strictEqual((yield* listener.refused)["over-limit"], reserving ? 15 : 14)
          })
        )
    )
  }
})
