// Hostile clients against the real TLS and TCP listeners on 127.0.0.1: each is refused with a typed,
// logged reason (a silent one by the handshake timeout), without allocating what it claims, and
// without disturbing a connection that is already established.
import * as crypto from "node:crypto"
import * as net from "node:net"
import * as tls from "node:tls"
import { assert, describe, it } from "@effect/vitest"
import { Frame, Identity } from "@hotstuff2/wire"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Queue from "effect/Queue"
import * as Stream from "effect/Stream"
import { TcpTransport, TlsTransport, type Transport, TransportConfig } from "../src/index.js"
import { selfSignedCertificate } from "../src/internal/certificate.js"
import { decodeGoodbye, encodeHello, PROTOCOL_VERSION, transcript } from "../src/internal/handshake.js"
import { accept, receiver } from "./fixtures/conformance.js"
import { buildTransport, type Harness, NETWORK } from "./fixtures/harness.js"
import { identity } from "./fixtures/identities.js"

/**
 * Short, so that a silent client is cut soon, but long enough for the good connection of `setup` to
 * complete its TLS and application handshakes on a loaded machine.
 */
const HANDSHAKE_TIMEOUT = 1000
const config = { handshakeTimeout: HANDSHAKE_TIMEOUT }
/**
 * Only a guard against a hang, under the test timeout (30 s): an awaited refusal comes at once, or
 * when the handshake timer fires.
 */
const REFUSAL_DEADLINE = Duration.seconds(20)

const tlsHarness: Harness = {
  name: "TLS",
  clock: "live",
  layer: (id, c) => TlsTransport.layer({ identity: id, config: c }),
  listenAddress: () => "127.0.0.1:0",
  provide: (e) => e
}
const tcpHarness: Harness = {
  name: "TCP",
  clock: "live",
  layer: (id, c) => TcpTransport.layer({ identity: id, config: c, allowUnencrypted: true }),
  listenAddress: () => "127.0.0.1:0",
  provide: (e) => e
}

const portOf = (address: string) => Number(address.split(":").pop())

/** A raw client: plain TCP, or TLS with the certificate of `as` (a real key, but our own bytes after). */
const rawClient = (kind: "TLS" | "TCP", address: string, as = identity(7)) =>
  Effect.async<net.Socket, Error>((resume) => {
    const port = portOf(address)
    if (kind === "TCP") {
      const socket = net.connect({ host: "127.0.0.1", port }, () => resume(Effect.succeed(socket)))
      socket.on("error", (e) => resume(Effect.fail(e)))
      return
    }
    const cert = selfSignedCertificate(as, {
      notBefore: new Date(Date.now() - 1e6),
      notAfter: new Date(Date.now() + 1e9)
    })
    const socket = tls.connect(
      { host: "127.0.0.1", port, key: cert.keyPem, cert: cert.certPem, rejectUnauthorized: false },
      () => resume(Effect.succeed(socket))
    )
    socket.on("error", (e) => resume(Effect.fail(e)))
  }).pipe(Effect.tap((socket) => Effect.addFinalizer(() => Effect.sync(() => socket.destroy()))))

const controlFrame = (message: Uint8Array) =>
  Either.getOrThrow(Frame.encode({ channel: 255, messages: [message] }))

const hello = (
  as: Identity.Identity,
  overrides: { networkId?: string; timestamp?: number; nonce?: string } = {}
) =>
  encodeHello({
    version: PROTOCOL_VERSION,
    networkId: overrides.networkId ?? NETWORK,
    peer: as.peerId,
    nonce: overrides.nonce ?? crypto.randomBytes(32).toString("hex"),
    timestamp: overrides.timestamp ?? Date.now()
  })

/** Resolves when the server closes the socket. */
const serverCloses = (socket: net.Socket) =>
  Effect.async<void>((resume) => {
    if (socket.destroyed) return resume(Effect.void)
    socket.on("close", () => resume(Effect.void))
    socket.resume()
  })

/**
 * The control messages the listener writes on a raw socket (its Hello, then its Auth or a Goodbye),
 * one at a time, in order.
 */
const controlMessages = (socket: net.Socket) =>
  Effect.gen(function* () {
    const messages = yield* Queue.unbounded<Uint8Array>()
    const decoder = new Frame.FrameDecoder()
    socket.on("data", (chunk: Buffer) => {
      decoder.push(chunk, (frame) => {
        if (frame.channel === 255) for (const m of frame.messages) Queue.unsafeOffer(messages, m)
      })
    })
    return Queue.take(messages).pipe(
      Effect.timeoutFail({
        duration: REFUSAL_DEADLINE,
        onTimeout: () => new Error("the listener sent no control message")
      })
    )
  })

/** The next refusal; fails the test, rather than hanging it, if none ever comes. */
const nextRefusal = (listener: Transport.Listener) =>
  Stream.runHead(listener.refusals).pipe(
    Effect.flatMap((o) => (o._tag === "Some" ? Effect.succeed(o.value) : Effect.dieMessage("no refusal"))),
    Effect.timeoutFail({
      duration: REFUSAL_DEADLINE,
      onTimeout: () => new Error(`no refusal after ${Duration.format(REFUSAL_DEADLINE)}`)
    })
  )

for (const harness of [tlsHarness, tcpHarness]) {
  const kind = harness.name as "TLS" | "TCP"
  describe(`${kind} listener refuses bad input`, () => {
    /** A listener with one good connection open, to check it is not disturbed. */
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
        return { listener, stillWorks }
      })

    it.scopedLive("garbage bytes", () =>
      Effect.gen(function* () {
        const { listener, stillWorks } = yield* setup()
        const socket = yield* rawClient("TCP", listener.address)
        socket.write(crypto.randomBytes(300))
        const refusal = yield* nextRefusal(listener)
        assert.strictEqual(refusal.reason, kind === "TLS" ? "tls" : "protocol")
        yield* serverCloses(socket)
        yield* stillWorks
      })
    )

    it.scopedLive("a length prefix of 4 GiB, refused on the 8-byte header alone", () =>
      Effect.gen(function* () {
        const { listener, stillWorks } = yield* setup()
        const socket = yield* rawClient(kind, listener.address)
        socket.write(Uint8Array.of(1, 255, 0, 0, 0xff, 0xff, 0xff, 0xff))
        const refusal = yield* nextRefusal(listener)
        assert.strictEqual(refusal.reason, "protocol")
        assert.match(refusal.detail, /FrameTooLarge/)
        yield* serverCloses(socket)
        yield* stillWorks
      })
    )

    it.scopedLive("before authentication: a large frame, and a compressed one, are refused unread", () =>
      Effect.gen(function* () {
        const { listener, stillWorks } = yield* setup()
        // 64 KiB is fine after the handshake, but not from a client that has not authenticated.
        const big = yield* rawClient(kind, listener.address)
        big.write(Either.getOrThrow(Frame.encode({ channel: 255, messages: [new Uint8Array(64 * 1024)] })))
        const first = yield* nextRefusal(listener)
        assert.strictEqual(first.reason, "protocol")
        assert.match(first.detail, /FrameTooLarge/)
        yield* serverCloses(big)
        const deflated = yield* rawClient(kind, listener.address)
        deflated.write(
          Either.getOrThrow(
            Frame.encode(
              { channel: 255, messages: [new Uint8Array(300_000)] },
              { compression: "deflate", compressionThreshold: 1024, maxInflationRatio: 100_000 }
            )
          )
        )
        const second = yield* nextRefusal(listener)
        assert.strictEqual(second.reason, "protocol")
        assert.match(second.detail, /DecompressedTooLarge/)
        yield* serverCloses(deflated)
        yield* stillWorks
      })
    )

    it.scopedLive("a client presenting the listener's own key (a reflection)", () =>
      Effect.gen(function* () {
        const { listener, stillWorks } = yield* setup()
        const socket = yield* rawClient(kind, listener.address, identity(1))
        socket.write(controlFrame(hello(identity(1))))
        const refusal = yield* nextRefusal(listener)
        assert.strictEqual(refusal.reason, "identity-mismatch")
        assert.match(refusal.detail, /own key/)
        yield* serverCloses(socket)
        yield* stillWorks
      })
    )

    it.scopedLive("a client that opens the connection and goes silent (slowloris)", () =>
      Effect.gen(function* () {
        const { listener, stillWorks } = yield* setup()
        const socket = yield* rawClient("TCP", listener.address)
        socket.write(Uint8Array.of(kind === "TLS" ? 0x16 : 1)) // one byte, then nothing
        // Cut by the handshake timer, whenever it fires on this machine: the reason says so.
        const refusal = yield* nextRefusal(listener)
        assert.strictEqual(refusal.reason, "timeout")
        yield* serverCloses(socket)
        yield* stillWorks
      })
    )

    it.scopedLive("a stale hello, and a replayed one", () =>
      Effect.gen(function* () {
        const { listener, stillWorks } = yield* setup()
        const stale = yield* rawClient(kind, listener.address)
        stale.write(controlFrame(hello(identity(7), { timestamp: Date.now() - 10 * 60_000 })))
        assert.strictEqual((yield* nextRefusal(listener)).reason, "stale-hello")
        yield* serverCloses(stale)

        const nonce = crypto.randomBytes(32).toString("hex")
        const fixed = hello(identity(7), { nonce })
        const first = yield* rawClient(kind, listener.address)
        first.write(controlFrame(fixed))
        // The first is answered with the server's own hello and auth, then times out waiting for ours.
        const replay = yield* rawClient(kind, listener.address)
        replay.write(controlFrame(fixed))
        const refusals = [yield* nextRefusal(listener), yield* nextRefusal(listener)].map((r) => r.reason)
        assert.include(refusals, "replayed-hello")
        yield* stillWorks
      })
    )

    it.scopedLive(
      "an admission function that throws refuses the peer; the process and the listener go on",
      () =>
        Effect.gen(function* () {
          const server = yield* buildTransport(harness, identity(1), config)
          const listener = yield* server.listen("127.0.0.1:0", {
            authorize: (peer) => {
              if (peer === identity(3).peerId) throw new Error("a bug in the application's authorize")
              return Effect.succeed(true)
            }
          })
          const stranger = yield* buildTransport(harness, identity(3), config)
          const error = yield* Effect.flip(stranger.dial(listener.address, identity(1).peerId))
          assert.match(error.detail, /not-admitted/)
          assert.strictEqual((yield* nextRefusal(listener)).reason, "not-admitted")
          const friend = yield* buildTransport(harness, identity(2), config)
          const connection = yield* friend.dial(listener.address, identity(1).peerId)
          assert.strictEqual(connection.remotePeer, identity(1).peerId)
        })
    )

    it.scopedLive("a hello naming a key the client does not hold", () =>
      Effect.gen(function* () {
        const { listener, stillWorks } = yield* setup()
        // Claims to be identity(2), the admitted validator, but holds identity(7)'s key.
        const socket = yield* rawClient(kind, listener.address, identity(7))
        const claimed = hello(identity(2))
        socket.write(controlFrame(claimed))
        if (kind === "TCP") {
          // Without TLS the signature is what proves the key: sign with the wrong one.
          const forged = Identity.sign(identity(7), transcript(NETWORK, "dialer", claimed, new Uint8Array(0)))
          socket.write(controlFrame(Uint8Array.of(2, ...forged)))
        }
        const refusal = yield* nextRefusal(listener)
        assert.strictEqual(refusal.reason, kind === "TLS" ? "identity-mismatch" : "bad-signature")
        yield* serverCloses(socket)
        yield* stillWorks
      })
    )

    if (kind === "TCP") {
      /**
       * A raw dialer that runs the handshake by the book, its Hello naming `claimed` and its Auth
       * signed by `signer` over the right transcript (its Hello, the listener's, the dialer role);
       * returns the listener's answer (its Auth or a Goodbye).
       */
      const rawHandshake = (address: string, claimed: Identity.Identity, signer: Identity.Identity) =>
        Effect.gen(function* () {
          const socket = yield* rawClient("TCP", address)
          const next = yield* controlMessages(socket)
          const dialerHello = hello(claimed)
          socket.write(controlFrame(dialerHello))
          const listenerHello = yield* next
          assert.strictEqual(listenerHello[0], 0x01, "the listener's Hello")
          const signature = Identity.sign(signer, transcript(NETWORK, "dialer", dialerHello, listenerHello))
          socket.write(controlFrame(Uint8Array.of(0x02, ...signature)))
          return { socket, answer: yield* next }
        })

      it.scopedLive("an Auth correct in every respect but signed with another key than its Hello names", () =>
        Effect.gen(function* () {
          const { listener, stillWorks } = yield* setup()
          // The same dialer signing with the key its Hello names is admitted: the procedure is right.
          const honest = yield* rawHandshake(listener.address, identity(3), identity(3))
          assert.strictEqual(honest.answer[0], 0x02, "the listener answers with its Auth")
          assert.strictEqual((yield* accept(listener)).remotePeer, identity(3).peerId)

          // Claims identity(3), signs the same transcript with identity(7)'s key.
          const forged = yield* rawHandshake(listener.address, identity(3), identity(7))
          const goodbye = decodeGoodbye(forged.answer)
          assert.strictEqual(goodbye?.reason, "bad-signature", "the dialer is told why")
          const refusal = yield* nextRefusal(listener)
          assert.strictEqual(refusal.reason, "bad-signature")
          assert.isUndefined(refusal.peer, "an unproven key is not named as the peer")
          yield* serverCloses(forged.socket)
          yield* stillWorks
        })
      )
    }

    if (kind === "TLS") {
      it.scopedLive("plaintext to the TLS port, and a client without a certificate", () =>
        Effect.gen(function* () {
          const { listener, stillWorks } = yield* setup()
          const plain = yield* rawClient("TCP", listener.address)
          plain.write(controlFrame(hello(identity(7))))
          assert.strictEqual((yield* nextRefusal(listener)).reason, "tls")
          yield* serverCloses(plain)
          const anonymous = yield* Effect.async<tls.TLSSocket, Error>((resume) => {
            const s = tls.connect(
              { host: "127.0.0.1", port: portOf(listener.address), rejectUnauthorized: false },
              () => resume(Effect.succeed(s))
            )
            s.on("error", (e) => resume(Effect.fail(e)))
          })
          yield* Effect.addFinalizer(() => Effect.sync(() => anonymous.destroy()))
          const refusal = yield* nextRefusal(listener)
          assert.strictEqual(refusal.reason, "tls")
          assert.match(refusal.detail, /certificate/)
          yield* stillWorks
        })
      )
    }

    it.scopedLive("over the limit of concurrent handshakes", () =>
      Effect.gen(function* () {
        const { listener, stillWorks } = yield* setup({ maxConcurrentHandshakes: 2 })
        yield* rawClient("TCP", listener.address)
        yield* rawClient("TCP", listener.address)
        const third = yield* rawClient("TCP", listener.address)
        const refusal = yield* nextRefusal(listener)
        assert.strictEqual(refusal.reason, "over-limit")
        assert.match(refusal.detail, /handshakes in progress/)
        yield* serverCloses(third)
        yield* stillWorks
      })
    )

    it.scopedLive("over the limit of connections per IP, refused connections included until they close", () =>
      Effect.gen(function* () {
        const { listener, stillWorks } = yield* setup({ maxConnectionsPerIp: 3 })
        // The good connection holds one place; a refused one still flushing its goodbye holds another.
        const refused = yield* rawClient(kind, listener.address)
        refused.write(controlFrame(hello(identity(7), { networkId: "another-network" })))
        assert.strictEqual((yield* nextRefusal(listener)).reason, "wrong-network")
        yield* rawClient("TCP", listener.address)
        const fourth = yield* rawClient("TCP", listener.address)
        const refusal = yield* nextRefusal(listener)
        assert.strictEqual(refusal.reason, "over-limit")
        assert.match(refusal.detail, /connections from/)
        yield* serverCloses(fourth)
        yield* stillWorks
      })
    )
  })
}
