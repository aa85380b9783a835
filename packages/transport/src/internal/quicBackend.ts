// QUIC as a transport backend: a listener's UDP socket with stateless retry (no state for an
// address until it proves it receives our packets), a UDP socket per dial, the peer's Ed25519
// certificate pinned once the TLS handshake inside QUIC completes, before any stream byte is read.
import * as crypto from "node:crypto"
import type * as dgram from "node:dgram"
import * as Effect from "effect/Effect"
import { type Expected, expects, formatAddress, type PeerId, parseAddress } from "../Transport.js"
import { ListenError } from "../TransportError.js"
import { peerIdOfCertificate } from "./certificate.js"
import { HandshakeError } from "./handshake.js"
import {
  bindUdp,
  buildConfig,
  DrivenConnection,
  MAX_CONN_ID_LEN,
  type Quiche,
  type QuicSettings,
  RetryTokens,
  randomConnectionId
} from "./quicEndpoint.js"
import { quicPipe } from "./quicPipe.js"
import { limitKey } from "./socketBackend.js"
import type { Accepted, Backend, Connected, InboundAttempt } from "./transport.js"

/** How long a retry token is good for: the client echoes it in its next packet, one round trip later. */
const TOKEN_MILLIS = 10_000

/** Counters of what the listeners dropped before any connection state existed. */
export interface QuicDatagramStats {
  /** Datagrams that are not QUIC (no parsable header). */
  garbage: number
  /** Initial packets answered with a stateless retry. */
  retries: number
  /** Initial packets with a token that does not check (forged, stale, or another address's). */
  badTokens: number
}

/** The peer's key from the first certificate of its chain; undefined when it is not Ed25519. */
const pinnedOf = (chain: ReadonlyArray<Uint8Array> | null): PeerId | undefined => {
  const first = chain?.[0]
  if (first === undefined) return undefined
  try {
    return peerIdOfCertificate(new crypto.X509Certificate(first))
  } catch {
    return undefined
  }
}

const isLoopback = (host: string) => host.startsWith("127.") || host === "::1" || host === "localhost"

/** The hello and auth go on the control stream first; channels by their priority level after it. */
export const urgencyFor =
  (levels: ReadonlyMap<number, number>) =>
  (channel: number): number =>
    channel === 255 ? 0 : Math.min(7, 1 + (levels.get(channel) ?? 6))

export const quicBackend = (
  quiche: Quiche,
  settings: QuicSettings,
  urgencyOf: (channel: number) => number,
  now: () => number,
  stats: QuicDatagramStats
): Backend => {
  const serverConfig = buildConfig(quiche, settings)
  const clientConfig = buildConfig(quiche, settings)
  const live = new Set<DrivenConnection>()
  const sockets = new Set<dgram.Socket>()
  const track = (driven: DrivenConnection) => {
    live.add(driven)
  }

  /** Calls `done` once the TLS handshake completed (with the peer's key) or failed; the cancel cuts it. */
  const whenEstablished = (
    driven: DrivenConnection,
    failure: HandshakeError["reason"],
    done: (result: { pinnedPeer: PeerId | undefined } | HandshakeError) => void
  ): (() => void) => {
    let settled = false
    const settle = (result: { pinnedPeer: PeerId | undefined } | HandshakeError) => {
      if (settled) return
      settled = true
      done(result)
    }
    driven.events = {
      established: () => settle({ pinnedPeer: pinnedOf(driven.conn.peerCertChain()) }),
      progress: () => {},
      closed: (why) =>
        settle(new HandshakeError({ reason: failure, detail: why ?? "the QUIC connection closed" }))
    }
    return () => {
      if (settled) return
      settled = true
      driven.close(2, "cancelled")
    }
  }

  const listen: Backend["listen"] = (address, onInbound) =>
    Effect.gen(function* () {
      const parsed = parseAddress(address)
      if (parsed === undefined) return yield* new ListenError({ address, detail: "not a host:port address" })
      const socket = yield* Effect.tryPromise({
        try: () => bindUdp(parsed.host, parsed.port, settings.socketBufferBytes),
        catch: (error) => new ListenError({ address, detail: (error as Error).message })
      })
      sockets.add(socket)
      const bound = socket.address()
      const local = { host: bound.address, port: bound.port }
      const tokens = new RetryTokens()
      const byId = new Map<string, DrivenConnection>()
      let accepting = true
      const release = () => {
        if (!accepting && byId.size === 0 && sockets.delete(socket)) socket.close()
      }
      const scratch = Buffer.allocUnsafe(quiche.MAX_DATAGRAM_SIZE)
      const reply = (bytes: number, to: dgram.RemoteInfo) => {
        socket.send(Buffer.from(scratch.subarray(0, bytes)), to.port, to.address)
      }

      const attemptOf = (driven: DrivenConnection, from: dgram.RemoteInfo): InboundAttempt => {
        const remoteAddress = formatAddress(from.address, from.port)
        const acceptNow = (done: (result: Accepted | HandshakeError) => void) =>
          whenEstablished(driven, "tls", (result) => {
            if (result instanceof HandshakeError) return done(result)
            if (result.pinnedPeer === undefined) {
              driven.close(2, "no Ed25519 certificate")
              return done(new HandshakeError({ reason: "tls", detail: "no Ed25519 client certificate" }))
            }
            done({
              pipe: quicPipe(driven, remoteAddress, { role: "server", urgencyOf }),
              pinnedPeer: result.pinnedPeer
            })
          })
        return {
          remoteAddress,
          remoteHost: limitKey(from.address),
          accept: Effect.async<Accepted, HandshakeError>((resume) => {
            const cancel = acceptNow((result) =>
              resume(result instanceof HandshakeError ? Effect.fail(result) : Effect.succeed(result))
            )
            return Effect.sync(cancel)
          }),
          acceptNow,
          destroy: () => driven.close(2, "refused")
        }
      }

      const onDatagram = (data: Buffer, from: dgram.RemoteInfo) => {
        let header: ReturnType<Quiche["Header"]["fromSlice"]>
        try {
          header = quiche.Header.fromSlice(data, MAX_CONN_ID_LEN)
        } catch {
          stats.garbage++
          return
        }
        const key = Buffer.from(header.dcid).toString("hex")
        const existing = byId.get(key)
        if (existing !== undefined) return existing.receive(data)
        if (!accepting || header.ty !== quiche.Type.Initial) return
        if (!quiche.versionIsSupported(header.version)) {
          return reply(quiche.negotiateVersion(header.scid, header.dcid, scratch), from)
        }
        const peer = { host: from.address, port: from.port }
        const token = header.token
        if (token === undefined || token.length === 0) {
          stats.retries++
          const minted = tokens.mint(header.dcid, peer, now())
          const id = tokens.connectionId(header.dcid)
          return reply(quiche.retry(header.scid, header.dcid, id, minted, header.version, scratch), from)
        }
        const odcid = tokens.check(token, peer, now(), TOKEN_MILLIS)
        if (odcid === undefined || header.dcid.length !== MAX_CONN_ID_LEN) {
          stats.badTokens++
          return
        }
        let conn: ReturnType<Quiche["Connection"]["accept"]>
        try {
          conn = quiche.Connection.accept(header.dcid, odcid, local, peer, serverConfig)
        } catch {
          stats.garbage++
          return
        }
        const driven = new DrivenConnection(conn, socket, peer, local, settings.maxUdpPayloadBytes, () => {
          byId.delete(key)
          live.delete(driven)
          release()
        })
        byId.set(key, driven)
        track(driven)
        onInbound(attemptOf(driven, from))
        driven.receive(data)
      }
      // Whatever a datagram makes the native binding throw (a header it parses but cannot answer)
      // is that datagram's problem, never the process's.
      socket.on("message", (data, from) => {
        try {
          onDatagram(data, from)
        } catch {
          stats.garbage++
        }
      })

      const stop = Effect.sync(() => {
        accepting = false
        release()
      })
      yield* Effect.addFinalizer(() => stop)
      return { address: formatAddress(local.host, local.port), close: stop }
    })

  const connectNow: NonNullable<Backend["connectNow"]> = (address, expected, done) => {
    const parsed = parseAddress(address)
    if (parsed === undefined) {
      done(new HandshakeError({ reason: "unreachable", detail: "not a host:port address" }))
      return () => {}
    }
    let cancelled = false
    let cancelHandshake: (() => void) | undefined
    const v6 = parsed.host.includes(":")
    const bindHost = isLoopback(parsed.host) ? parsed.host : v6 ? "::" : "0.0.0.0"
    bindUdp(bindHost, 0, settings.socketBufferBytes).then(
      (socket) => {
        if (cancelled) return socket.close()
        sockets.add(socket)
        socket.connect(parsed.port, parsed.host, () => {
          if (cancelled) {
            sockets.delete(socket)
            return socket.close()
          }
          const bound = socket.address()
          const local = { host: bound.address, port: bound.port }
          const remote = { host: parsed.host, port: parsed.port }
          let conn: ReturnType<Quiche["Connection"]["connect"]>
          try {
            conn = quiche.Connection.connect(null, randomConnectionId(), local, remote, clientConfig)
          } catch (error) {
            sockets.delete(socket)
            socket.close()
            return done(new HandshakeError({ reason: "tls", detail: (error as Error).message }))
          }
          const driven = new DrivenConnection(
            conn,
            socket,
            remote,
            local,
            settings.maxUdpPayloadBytes,
            () => {
              live.delete(driven)
              if (sockets.delete(socket)) socket.close()
            },
            true
          )
          track(driven)
          socket.on("message", (data) => driven.receive(data))
          // Connected UDP: a closed port answers with ICMP, which arrives here.
          socket.on("error", (error: NodeJS.ErrnoException) => {
            if (cancelHandshake === undefined) return
            const cancel = cancelHandshake
            cancelHandshake = undefined
            cancel()
            done(new HandshakeError({ reason: "unreachable", detail: error.message }))
          })
          cancelHandshake = whenEstablished(driven, "tls", (result) => {
            cancelHandshake = undefined
            if (result instanceof HandshakeError) return done(result)
            const pinnedPeer = result.pinnedPeer
            if (pinnedPeer === undefined || !expects(expected, pinnedPeer)) {
              driven.close(2, "identity-mismatch")
              return done(
                new HandshakeError({
                  reason: "identity-mismatch",
                  detail: `certificate key is ${pinnedPeer?.slice(0, 16) ?? "not Ed25519"}, expected ${typeof expected === "string" ? expected.slice(0, 16) : "any"}`,
                  peer: pinnedPeer
                })
              )
            }
            const connected: Connected = {
              pipe: quicPipe(driven, address, { role: "client", urgencyOf }),
              pinnedPeer,
              destroy: () => driven.close(1, "cut")
            }
            done(connected)
          })
          driven.flush()
        })
      },
      (error: Error) => {
        if (!cancelled) done(new HandshakeError({ reason: "unreachable", detail: error.message }))
      }
    )
    return () => {
      cancelled = true
      cancelHandshake?.()
    }
  }

  return {
    kind: "quic",
    // The certificate proves the key (TLS 1.3 inside QUIC) and QUIC protects the hellos.
    signatures: false,
    listen,
    connect: (address: string, expected: Expected) =>
      Effect.async<Connected, HandshakeError>((resume) => {
        const cancel = connectNow(address, expected, (result) =>
          resume(result instanceof HandshakeError ? Effect.fail(result) : Effect.succeed(result))
        )
        return Effect.sync(cancel)
      }),
    connectNow,
    shutdown: Effect.sync(() => {
      for (const driven of [...live]) driven.close(0, "shutdown")
      for (const socket of sockets) socket.close()
      sockets.clear()
    })
  }
}
