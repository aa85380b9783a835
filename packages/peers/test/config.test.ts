import { assert, describe, it } from "@effect/vitest"
import * as Duration from "effect/Duration"
import * as Either from "effect/Either"
import { PeersConfig } from "../src/index.js"

describe("PeersConfig", () => {
  it("fills every default, and reads durations as milliseconds or text", () => {
    const config = Either.getOrThrow(PeersConfig.decode({ redialCap: "5 seconds", heartbeatInterval: 250 }))
    assert.strictEqual(Duration.toMillis(config.redialCap), 5000)
    assert.strictEqual(Duration.toMillis(config.heartbeatInterval), 250)
    assert.strictEqual(config.weights.BadSignature, -50)
    assert.strictEqual(config.maxKnownPeers, 10_000)
  })

  it("refuses a ban threshold no clamped score can reach, naming the field", () => {
    const result = PeersConfig.decode({ maxScore: 100, banThreshold: -150 })
    assert.isTrue(Either.isLeft(result) && result.left.field === "banThreshold")
  })

  it("refuses an infinite banCap: a validator is never banned for good", () => {
    const result = PeersConfig.decode({ banCap: Duration.infinity })
    assert.isTrue(Either.isLeft(result) && result.left.field === "banCap")
  })

  it("names a field out of range", () => {
    const result = PeersConfig.decode({ missedHeartbeats: 0 })
    assert.isTrue(Either.isLeft(result) && result.left.field === "missedHeartbeats")
  })
})
