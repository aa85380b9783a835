import { assert, describe, it } from "@effect/vitest"
import * as Duration from "effect/Duration"
import * as Either from "effect/Either"
import { TransportConfig } from "../src/index.js"

describe("TransportConfig", () => {
  it("fills every default, and reads durations as milliseconds or text", () => {
    const config = Either.getOrThrow(
      TransportConfig.decode({ networkId: "n", handshakeTimeout: "2 seconds", closeTimeout: 500 })
    )
    assert.strictEqual(Duration.toMillis(config.handshakeTimeout), 2000)
    assert.strictEqual(Duration.toMillis(config.closeTimeout), 500)
    assert.strictEqual(config.maxFrameBytes, 16 * 1024 * 1024)
    assert.deepStrictEqual(
      config.channels.map((c) => c.name),
      ["heartbeat", "consensus", "control", "discovery", "sync"]
    )
  })

  it("names the field that is wrong and the form it expects", () => {
    const missing = TransportConfig.decode({} as TransportConfig.TransportConfigInput)
    assert.isTrue(Either.isLeft(missing) && missing.left.field === "networkId")
    const negative = TransportConfig.decode({ networkId: "n", maxInboundFrames: -1 })
    assert.isTrue(Either.isLeft(negative) && negative.left.field === "maxInboundFrames")
    const duration = TransportConfig.decode({ networkId: "n", handshakeTimeout: "soon" })
    assert.isTrue(
      Either.isLeft(duration) &&
        duration.left.field === "handshakeTimeout" &&
        /duration/.test(duration.left.detail)
    )
    const channel = TransportConfig.decode({
      networkId: "n",
      channels: [{ ...TransportConfig.defaultChannels[0]!, id: 255 }]
    })
    assert.isTrue(Either.isLeft(channel) && channel.left.field.startsWith("channels"))
  })

  it("refuses two channels with the same id", () => {
    const result = TransportConfig.decode({
      networkId: "n",
      channels: [TransportConfig.defaultChannels[0]!, TransportConfig.defaultChannels[0]!]
    })
    assert.isTrue(Either.isLeft(result) && /distinct/.test(result.left.detail))
  })
})
