/**
 * The production transport: TLS 1.3 with mutual authentication. Each node presents a self-signed
 * Ed25519 certificate made from its identity key at start; each side pins the other's key to the
 * PeerId it expects (dialer) or admits (listener) before reading any application byte, then both
 * run the hello/ack handshake (network id, protocol version, fresh timestamp) over the encrypted
 * channel.
 */
import * as crypto from "node:crypto"
import type * as net from "node:net"
import * as tls from "node:tls"
import type { Identity } from "@hotstuff2/wire"
import * as Clock from "effect/Clock"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import { peerIdOfCertificate, selfSignedCertificate } from "./internal/certificate.js"
import { HandshakeError } from "./internal/handshake.js"
import { onceSocket, type SecuredSocket, type SocketFlavor, socketBackend } from "./internal/socketBackend.js"
import { make } from "./internal/transport.js"
import { describeExpected, type Expected, expects, Transport } from "./Transport.js"
import * as TransportConfig from "./TransportConfig.js"
import type { InvalidTransportConfig } from "./TransportError.js"

export interface TlsTransportOptions {
  readonly identity: Identity.Identity
  readonly config: TransportConfig.TransportConfigInput
}

const DAY = 24 * 60 * 60 * 1000
const UNREACHABLE = new Set([
  "ECONNREFUSED",
  "EHOSTUNREACH",
  "ENETUNREACH",
  "ETIMEDOUT",
  "ECONNRESET",
  "EADDRNOTAVAIL"
])

/** The server side of an accepted raw socket; `done` once it is secure (or failed), with the client's key. */
const acceptTls = (
  context: tls.SecureContext,
  raw: net.Socket,
  done: (result: SecuredSocket | HandshakeError) => void
): (() => void) => {
  const socket = new tls.TLSSocket(raw, {
    isServer: true,
    secureContext: context,
    requestCert: true,
    rejectUnauthorized: false
  })
  socket.on("error", () => {}) // reported through onceSocket and the pipe
  const off = onceSocket(socket, "secure", "tls", (error) => {
    if (error !== undefined) return done(error)
    const pinnedPeer = peerIdOfCertificate(socket.getPeerX509Certificate())
    if (pinnedPeer === undefined) {
      return done(new HandshakeError({ reason: "tls", detail: "no Ed25519 client certificate" }))
    }
    done({ socket, pinnedPeer })
  })
  return () => {
    off()
    socket.destroy()
  }
}

/** A client connection; `done` once it is secure and the server's certificate holds an `expected` key. */
const connectTls = (
  context: tls.SecureContext,
  host: string,
  port: number,
  expected: Expected,
  done: (result: SecuredSocket | HandshakeError) => void
): (() => void) => {
  // `noDelay` at connect: `setNoDelay` on a TLS socket that is not connected yet is lost, and
  // Nagle then holds the hello behind the TLS handshake's last flight (about 5 ms a dial).
  const options: tls.ConnectionOptions & Pick<net.TcpNetConnectOpts, "noDelay"> = {
    host,
    port,
    secureContext: context,
    rejectUnauthorized: false,
    minVersion: "TLSv1.3",
    noDelay: true
  }
  const socket = tls.connect(options)
  socket.on("error", () => {})
  const off = onceSocket(socket, "secureConnect", "tls", (error) => {
    if (error !== undefined) {
      socket.destroy()
      return done(
        UNREACHABLE.has(/E[A-Z]+/.exec(error.detail)?.[0] ?? "")
          ? new HandshakeError({ ...error, reason: "unreachable" })
          : error
      )
    }
    const pinnedPeer = peerIdOfCertificate(socket.getPeerX509Certificate())
    if (pinnedPeer === undefined || !expects(expected, pinnedPeer)) {
      socket.destroy()
      return done(
        new HandshakeError({
          reason: "identity-mismatch",
          detail: `certificate key is ${pinnedPeer?.slice(0, 16) ?? "not Ed25519"}, expected ${describeExpected(expected).slice(0, 16)}`,
          peer: pinnedPeer
        })
      )
    }
    done({ socket, pinnedPeer })
  })
  return () => {
    off()
    socket.destroy()
  }
}

/** Runs a callback-style step as an Effect; interrupting it cancels the step. */
const asEffect = (
  step: (done: (result: SecuredSocket | HandshakeError) => void) => () => void
): Effect.Effect<SecuredSocket, HandshakeError> =>
  Effect.async<SecuredSocket, HandshakeError>((resume) => {
    const cancel = step((result) =>
      resume(result instanceof HandshakeError ? Effect.fail(result) : Effect.succeed(result))
    )
    return Effect.sync(cancel)
  })

const tlsFlavor = (context: tls.SecureContext): SocketFlavor => ({
  kind: "tls",
  // The certificate proves the key and TLS protects the hellos: no extra signatures needed.
  signatures: false,
  accept: (raw) => asEffect((done) => acceptTls(context, raw, done)),
  connect: (host, port, expected) => asEffect((done) => connectTls(context, host, port, expected, done)),
  // Callbacks: a connection setup costs no fiber of its own.
  acceptNow: (raw, done) => acceptTls(context, raw, done),
  connectNow: (host, port, expected, done) => connectTls(context, host, port, expected, done)
})

/** TLS 1.3 with pinned Ed25519 certificates. Closing the layer closes every listener and connection. */
export const layer = (options: TlsTransportOptions): Layer.Layer<Transport, InvalidTransportConfig> =>
  Layer.scoped(
    Transport,
    Effect.gen(function* () {
      const config = yield* TransportConfig.decode(options.config)
      const now = yield* Clock.currentTimeMillis
      const certificate = selfSignedCertificate(options.identity, {
        notBefore: new Date(now - DAY),
        notAfter: new Date(now + 3650 * DAY)
      })
      const context = tls.createSecureContext({
        key: certificate.keyPem,
        cert: certificate.certPem,
        minVersion: "TLSv1.3",
        // Under TLS 1.3 OpenSSL then issues stateful tickets instead of encrypted ones (Node 20 has
        // no option to send none): cheaper for the listener, and no dial resumes a session (dials
        // do not offer one), so each side still pins the other's key on a full handshake.
        secureOptions: crypto.constants.SSL_OP_NO_TICKET
      })
      return yield* make(options.identity, config, socketBackend(tlsFlavor(context)))
    })
  )
