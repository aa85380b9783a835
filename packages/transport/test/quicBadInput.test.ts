// Hostile clients against the real QUIC listener on 127.0.0.1: garbage datagrams, a flood of
// Initial packets (answered statelessly), a flood of completed QUIC handshakes that never say hello,
// a client without a certificate, oversized frames before and after authentication. Each is dropped
// or refused with a typed reason, and a connection that is already established keeps working. A key
// the listener does not admit and a peer of another network are conformance cases (test/quic.test.ts).
import * as crypto from "node:crypto"
import * as dgram from "node:dgram"
import { assert, describe, it } from "@effect/vitest"
import { Frame } from "@hotstuff2/wire"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Stream from "effect/Stream"
import { QuicTransport, type Transport, TransportConfig } from "../src/index.js"
import { selfSignedCertificate } from "../src/internal/certificate.js"
import { HandshakeError } from "../src/internal/handshake.js"
import type { Pipe } from "../src/internal/pipe.js"
import { quicBackend } from "../src/internal/quicBackend.js"
import {
  buildConfig,
  loadQuiche,
  type QuicSettings,
  randomConnectionId
} from "../src/internal/quicEndpoint.js"
import { accept, receiver } from "./fixtures/conformance.js"
import { buildTransport, type Harness } from "./fixtures/harness.js"
import { identity } from "./fixtures/identities.js"

const HANDSHAKE_TIMEOUT = 1000
const config = { handshakeTimeout: HANDSHAKE_TIMEOUT }
/** Only a guard against a hang: an awaited refusal comes at once, or when the handshake timer fires. */
const DEADLINE = Duration.seconds(20)

const harness: Harness = {
  name: "QUIC",
  clock: "live",
  layer: (id, c) => QuicTransport.layer({ identity: id, config: c }),
  listenAddress: () => "127.0.0.1:0",
  provide: (e) => e
}

const portOf = (address: string) => Number(address.split(":").pop())

const nextRefusal = (listener: Transport.Listener) =>
  Stream.runHead(listener.refusals).pipe(
    Effect.flatMap((o) => (o._tag === "Some" ? Effect.succeed(o.value) : Effect.dieMessage("no refusal"))),
    Effect.timeoutFail({ duration: DEADLINE, onTimeout: () => new Error("no refusal") })
  )

const settingsFor = (n: number): QuicSettings => {
  const cert = selfSignedCertificate(identity(n), {
    notBefore: new Date(Date.now() - 1e6),
    notAfter: new Date(Date.now() + 1e9)
  })
  return {
    certPem: cert.certPem,
    keyPem: cert.keyPem,
    maxUdpPayloadBytes: 1350,
    streamWindow: 1 << 20,
    connectionWindow: 4 << 20,
    maxStreams: 16,
    idleTimeoutMillis: 30_000,
    socketBufferBytes: 1 << 20
  }
}

/**
 * A raw QUIC client holding identity(n)'s certificate: it completes QUIC's TLS handshake (pinning
 * the listener's key) and gives the pipe, on which the test writes what it likes.
 */
const rawQuic = (address: string, n = 7) =>
  Effect.gen(function* () {
    const quiche = yield* Effect.promise(loadQuiche)
    const backend = quicBackend(quiche, settingsFor(n), () => 0, Date.now, {
      garbage: 0,
      retries: 0,
      badTokens: 0
    })
    yield* Effect.addFinalizer(() => backend.shutdown)
    const connected = yield* Effect.async<{ pipe: Pipe }, HandshakeError>((resume) => {
      const cancel = backend.connectNow!(address, identity(1).peerId, (result) =>
        resume(result instanceof HandshakeError ? Effect.fail(result) : Effect.succeed(result))
      )
      return Effect.sync(cancel)
    })
    const closed = Effect.async<void>((resume) => {
      connected.pipe.attach({ data: () => {}, drain: () => {}, close: () => resume(Effect.void) })
    })
    return { pipe: connected.pipe, closed }
  })

/** A UDP socket on 127.0.0.1 that sends raw datagrams to `address`. */
const udp = (address: string) =>
  Effect.acquireRelease(
    Effect.async<dgram.Socket>((resume) => {
      const socket = dgram.createSocket("udp4")
      socket.on("error", () => {})
      socket.bind(0, "127.0.0.1", () => resume(Effect.succeed(socket)))
    }),
    (socket) => Effect.sync(() => socket.close())
  ).pipe(
    Effect.map((socket) => ({
      send: (bytes: Uint8Array) => socket.send(bytes, portOf(address), "127.0.0.1"),
      socket
    }))
  )

describe("QUIC listener refuses bad input", () => {
  const setup = (extra: Partial<TransportConfig.TransportConfigInput> = {}) =>
    Effect.gen(function* () {
      const server = yield* buildTransport(harness, identity(1), { ...config, ...extra })
      const good = yield* buildTransport(harness, identity(2), config)
      const listener = yield* server.listen("127.0.0.1:0")
      const goodConnection = yield* good.dial(listener.address, identity(1).peerId)
      const atServer = yield* accept(listener)
      const r = yield* receiver(atServer)
      const stillWorks = Effect.gen(function* () {
        yield* goodConnection.send(TransportConfig.Channel.consensus, [Uint8Array.of(42)])
        const [frame] = yield* r.take(1)
        assert.strictEqual(frame!.messages[0]![0], 42, "the established connection still works")
      })
      return { listener, stillWorks, server }
    })

  it.scopedLive("garbage datagrams are dropped before any state: no refusal, no crash", () =>
    Effect.gen(function* () {
      const { listener, stillWorks } = yield* setup()
      const before = QuicTransport.datagramStats()
      const raw = yield* udp(listener.address)
      for (let i = 0; i < 2000; i++) raw.send(crypto.randomBytes(1 + (i % 1400)))
      // Short packets naming no connection, and long headers of an unknown version or type.
      for (let i = 0; i < 200; i++) raw.send(Buffer.concat([Uint8Array.of(0x40), crypto.randomBytes(40)]))
      yield* stillWorks
      yield* Effect.sleep(Duration.millis(50))
      yield* stillWorks
      const after = QuicTransport.datagramStats()
      assert.isAbove(after.garbage - before.garbage, 0, "some datagrams did not even parse")
      assert.deepStrictEqual(yield* listener.refused, {}, "no attempt was made for any of them")
    })
  )

  it.scopedLive("a flood of Initial packets is answered with stateless retries, nothing kept", () =>
    Effect.gen(function* () {
      const { listener, stillWorks } = yield* setup({ maxConcurrentHandshakes: 4 })
      const quiche = yield* Effect.promise(loadQuiche)
      const raw = yield* udp(listener.address)
      const local = { host: "127.0.0.1", port: raw.socket.address().port }
      const remote = { host: "127.0.0.1", port: portOf(listener.address) }
      // A genuine client's config (its certificate, ALPN, limits): only the volume is hostile.
      const clientConfig = buildConfig(quiche, settingsFor(7))
      const before = QuicTransport.datagramStats()
      const out = Buffer.alloc(1500)
      for (let i = 0; i < 500; i++) {
        const conn = quiche.Connection.connect(null, randomConnectionId(), local, remote, clientConfig)
        const sent = conn.send(out)
        if (sent !== null) raw.send(Buffer.from(out.subarray(0, sent[0])))
      }
      yield* stillWorks
      // Every Initial answered (loopback loses none), or the deadline tells how many were.
      yield* Effect.gen(function* () {
        while (QuicTransport.datagramStats().retries - before.retries < 500)
          yield* Effect.sleep(Duration.millis(10))
      }).pipe(
        Effect.timeoutFail({
          duration: DEADLINE,
          onTimeout: () =>
            new Error(`${QuicTransport.datagramStats().retries - before.retries} of 500 Initials answered`)
        })
      )
      assert.deepStrictEqual(yield* listener.refused, {}, "500 Initials took no handshake slot")
      // A real dial still gets through the retry and its handshake.
      const other = yield* buildTransport(harness, identity(3), config)
      const c = yield* other.dial(listener.address, identity(1).peerId)
      assert.strictEqual(c.remotePeer, identity(1).peerId)
    })
  )

  it.scopedLive(
    "completed QUIC handshakes that never say hello: over the limit refused, the rest time out",
    () =>
      Effect.gen(function* () {
        const { listener, stillWorks } = yield* setup({ maxConcurrentHandshakes: 2 })
        yield* rawQuic(listener.address)
        yield* rawQuic(listener.address)
        const third = yield* rawQuic(listener.address)
        const refusal = yield* nextRefusal(listener)
        assert.strictEqual(refusal.reason, "over-limit")
        assert.match(refusal.detail, /handshakes in progress/)
        yield* third.closed
        const timeouts = [yield* nextRefusal(listener), yield* nextRefusal(listener)].map((r) => r.reason)
        assert.deepStrictEqual(timeouts, ["timeout", "timeout"])
        yield* stillWorks
      })
  )

  it.scopedLive("over the limit of connections per IP", () =>
    Effect.gen(function* () {
      const { listener, stillWorks } = yield* setup({ maxConnectionsPerIp: 2 })
      yield* rawQuic(listener.address)
      const third = yield* rawQuic(listener.address)
      const refusal = yield* nextRefusal(listener)
      assert.strictEqual(refusal.reason, "over-limit")
      assert.match(refusal.detail, /connections from 127\.0\.0\.1/)
      yield* third.closed
      yield* stillWorks
    })
  )

  it.scopedLive("a client without a certificate is refused in the QUIC handshake", () =>
    Effect.gen(function* () {
      const { listener, stillWorks } = yield* setup()
      const quiche = yield* Effect.promise(loadQuiche)
      const raw = yield* udp(listener.address)
      const local = { host: "127.0.0.1", port: raw.socket.address().port }
      const remote = { host: "127.0.0.1", port: portOf(listener.address) }
      const anonymous = quiche.Config.withBoringSslCtx(true, true, null, null, null, "ed25519")
      anonymous.setApplicationProtos(["hotstuff2"])
      const conn = quiche.Connection.connect(null, randomConnectionId(), local, remote, anonymous)
      const out = Buffer.alloc(65536)
      const pump = () => {
        for (let s = conn.send(out); s !== null; s = conn.send(out))
          raw.send(Buffer.from(out.subarray(0, s[0])))
      }
      raw.socket.on("message", (data, from) => {
        try {
          conn.recv(data, { from: { host: from.address, port: from.port }, to: local })
        } catch {
          // refused: quiche closes the connection
        }
        pump()
      })
      pump()
      const refusal = yield* nextRefusal(listener)
      assert.strictEqual(refusal.reason, "tls")
      yield* stillWorks
    })
  )

  it.scopedLive(
    "before authentication: a 64 KiB frame, and a length prefix of 4 GiB, refused on the header",
    () =>
      Effect.gen(function* () {
        const { listener, stillWorks } = yield* setup()
        const big = yield* rawQuic(listener.address)
        big.pipe.write([
          Either.getOrThrow(Frame.encode({ channel: 255, messages: [new Uint8Array(64 * 1024)] }))
        ])
        const first = yield* nextRefusal(listener)
        assert.strictEqual(first.reason, "protocol")
        assert.match(first.detail, /FrameTooLarge/)
        yield* big.closed
        const huge = yield* rawQuic(listener.address)
        huge.pipe.write([Uint8Array.of(1, 255, 0, 0, 0xff, 0xff, 0xff, 0xff)])
        const second = yield* nextRefusal(listener)
        assert.strictEqual(second.reason, "protocol")
        assert.match(second.detail, /FrameTooLarge/)
        yield* huge.closed
        yield* stillWorks
      })
  )
})
