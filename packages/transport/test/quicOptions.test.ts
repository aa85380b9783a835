// QuicTransport's own options and the ways a dial fails that TLS does not share.
import * as dgram from "node:dgram"
import { assert, describe, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import { QuicTransport } from "../src/index.js"
import { buildTransport, type Harness, NETWORK } from "./fixtures/harness.js"
import { identity } from "./fixtures/identities.js"

const harness: Harness = {
  name: "QUIC",
  clock: "live",
  layer: (id, c) => QuicTransport.layer({ identity: id, config: c }),
  listenAddress: () => "127.0.0.1:0",
  provide: (e) => e
}

/** A UDP port on 127.0.0.1 that nothing listens on (bound, read, closed). */
const closedPort = Effect.async<number>((resume) => {
  const socket = dgram.createSocket("udp4")
  socket.bind(0, "127.0.0.1", () => {
    const { port } = socket.address()
    socket.close(() => resume(Effect.succeed(port)))
  })
})

describe("QuicTransport options and dial failures", () => {
  it.scoped("a QUIC option out of range fails the layer, naming it", () =>
    Effect.gen(function* () {
      const error = yield* Effect.flip(
        Layer.build(
          QuicTransport.layer({
            identity: identity(1),
            config: { networkId: NETWORK },
            quic: { maxUdpPayloadBytes: 100 }
          })
        )
      )
      assert.strictEqual(error._tag, "InvalidTransportConfig")
      assert.strictEqual(error.field, "quic.maxUdpPayloadBytes")
    })
  )

  it.scopedLive(
    "a dial to a UDP port nothing listens on fails as unreachable (the ICMP error comes back)",
    () =>
      Effect.gen(function* () {
        const port = yield* closedPort
        // A handshake timeout far longer than the ICMP answer takes: the reason must not be `timeout`.
        const dialer = yield* buildTransport(harness, identity(2), { handshakeTimeout: 20_000 })
        const error = yield* Effect.flip(dialer.dial(`127.0.0.1:${port}`, identity(1).peerId))
        assert.strictEqual(error._tag, "DialError")
        assert.strictEqual(error.reason, "unreachable")
      })
  )
})
