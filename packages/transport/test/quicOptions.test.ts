// QuicTransport's own options and the ways a dial fails that TLS does not share.
import * as crypto from "node:crypto"
import * as dgram from "node:dgram"
import { assert, describe, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import { QuicTransport, TransportConfig } from "../src/index.js"
import { accept, receiver } from "./fixtures/conformance.js"
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

  it.scopedLive(
    "frames larger than a stream's chunk arrive whole and unchanged (gathered from their parts)",
    () =>
      Effect.gen(function* () {
        const server = yield* buildTransport(harness, identity(1))
        const client = yield* buildTransport(harness, identity(2))
        const listener = yield* server.listen("127.0.0.1:0")
        const connection = yield* client.dial(listener.address, identity(1).peerId)
        const inbox = yield* receiver(yield* accept(listener))
        const messages = [1024 * 1024, 3 * 1024 * 1024 + 7].map((n) => new Uint8Array(crypto.randomBytes(n)))
        for (const m of messages) yield* connection.send(TransportConfig.Channel.consensus, [m])
        const got = (yield* inbox.messages(2)).flatMap((f) => f.messages)
        assert.deepStrictEqual(
          got.map((m) => crypto.createHash("sha256").update(m).digest("hex")),
          messages.map((m) => crypto.createHash("sha256").update(m).digest("hex"))
        )
      })
  )
})
