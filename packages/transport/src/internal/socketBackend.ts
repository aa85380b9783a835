// Sockets as a transport backend: a node:net server and client, with a flavour that turns a raw
// socket into an authenticated byte stream (TLS with a pinned certificate, or plain TCP).
import * as net from "node:net"
import * as Effect from "effect/Effect"
import { type Expected, formatAddress, type PeerId, parseAddress } from "../Transport.js"
import { type HandshakeFailure, ListenError } from "../TransportError.js"
import { HandshakeError } from "./handshake.js"
import { socketPipe } from "./socketPipe.js"
import type { Accepted, Backend } from "./transport.js"

export interface SocketFlavor {
  readonly kind: "tls" | "tcp"
  readonly signatures: boolean
  /** Server side: the accepted raw socket to a byte stream, and the key its certificate proved (TLS). */
  readonly accept: (raw: net.Socket) => Effect.Effect<SecuredSocket, HandshakeError>
  /** Client side: connect and, for TLS, check the certificate against `expected` before any byte is read. */
  readonly connect: (
    host: string,
    port: number,
    expected: Expected
  ) => Effect.Effect<SecuredSocket, HandshakeError>
  /** `accept` as callbacks (no fiber): calls `done` once unless cancelled; the cancel cuts the socket. */
  readonly acceptNow?: (raw: net.Socket, done: (result: SecuredSocket | HandshakeError) => void) => () => void
  /** `connect` as callbacks (no fiber): calls `done` once unless cancelled; the cancel cuts the socket. */
  readonly connectNow?: (
    host: string,
    port: number,
    expected: Expected,
    done: (result: SecuredSocket | HandshakeError) => void
  ) => () => void
}

/** A socket ready for the handshake, and the key its certificate proved (TLS). */
export interface SecuredSocket {
  readonly socket: net.Socket
  readonly pinnedPeer?: PeerId
}

/**
 * Calls `done` on one of a socket's events, or with the failure on 'error' or 'close' first.
 * Removes its listeners then, or when the returned cancel is called.
 */
export const onceSocket = (
  socket: net.Socket,
  event: string,
  failure: HandshakeFailure,
  done: (error: HandshakeError | undefined) => void
): (() => void) => {
  const off = () => {
    socket.off(event, onEvent)
    socket.off("error", onError)
    socket.off("close", onClose)
  }
  const onEvent = () => {
    off()
    done(undefined)
  }
  const onError = (error: Error) => {
    off()
    done(new HandshakeError({ reason: failure, detail: error.message }))
  }
  const onClose = () => {
    off()
    done(new HandshakeError({ reason: "closed", detail: "socket closed" }))
  }
  socket.once(event, onEvent)
  socket.once("error", onError)
  socket.once("close", onClose)
  return off
}

/** Waits for one of a socket's events; fails on 'error' or 'close' first. Removes its listeners. */
export const awaitSocket = (
  socket: net.Socket,
  event: string,
  failure: HandshakeFailure
): Effect.Effect<void, HandshakeError> =>
  Effect.async<void, HandshakeError>((resume) => {
    const off = onceSocket(socket, event, failure, (error) =>
      resume(error === undefined ? Effect.void : Effect.fail(error))
    )
    return Effect.sync(off)
  })

/**
 * The key of the per-IP limit: the IPv4 address, or the /64 prefix of an IPv6 address (one host
 * usually holds a whole /64, so counting single IPv6 addresses would not limit anyone).
 */
export const limitKey = (ip: string): string => {
  if (!ip.includes(":") || ip.startsWith("::ffff:")) return ip.replace(/^::ffff:/, "")
  const [head = "", tail = ""] = ip.split("::")
  const left = head.length > 0 ? head.split(":") : []
  const right = tail.length > 0 ? tail.split(":") : []
  const groups = ip.includes("::")
    ? [...left, ...new Array(8 - left.length - right.length).fill("0"), ...right]
    : left
  return `${groups
    .slice(0, 4)
    .map((g) => Number.parseInt(g || "0", 16).toString(16))
    .join(":")}::/64`
}

export const socketBackend = (flavor: SocketFlavor): Backend => {
  const sockets = new Set<net.Socket>()
  const track = (socket: net.Socket) => {
    sockets.add(socket)
    socket.once("close", () => sockets.delete(socket))
    // A socket without an 'error' listener takes the process down on error.
    socket.on("error", () => {})
  }
  const connectNow =
    (connect: NonNullable<SocketFlavor["connectNow"]>): NonNullable<Backend["connectNow"]> =>
    (address, expected, done) => {
      const parsed = parseAddress(address)
      if (parsed === undefined) {
        done(new HandshakeError({ reason: "unreachable", detail: "not a host:port address" }))
        return () => {}
      }
      return connect(parsed.host, parsed.port, expected, (result) => {
        if (result instanceof HandshakeError) return done(result)
        const { socket, pinnedPeer } = result
        track(socket)
        done({
          pipe: socketPipe(socket, address),
          destroy: () => socket.destroy(),
          ...(pinnedPeer !== undefined ? { pinnedPeer } : {})
        })
      })
    }
  return {
    kind: flavor.kind,
    signatures: flavor.signatures,
    listen: (address, onInbound) =>
      Effect.gen(function* () {
        const parsed = parseAddress(address)
        if (parsed === undefined)
          return yield* new ListenError({ address, detail: "not a host:port address" })
        const server = net.createServer({ noDelay: true }, (raw) => {
          track(raw)
          const remoteAddress = formatAddress(raw.remoteAddress ?? "unknown", raw.remotePort ?? 0)
          const accepted = ({ socket, pinnedPeer }: SecuredSocket) => {
            if (socket !== raw) track(socket)
            return {
              pipe: socketPipe(socket, remoteAddress),
              ...(pinnedPeer !== undefined ? { pinnedPeer } : {})
            }
          }
          const acceptNow = flavor.acceptNow
          onInbound({
            remoteAddress,
            remoteHost: limitKey(raw.remoteAddress ?? "unknown"),
            accept: Effect.map(flavor.accept(raw), accepted),
            ...(acceptNow !== undefined
              ? {
                  acceptNow: (done: (result: Accepted | HandshakeError) => void) =>
                    acceptNow(raw, (result) =>
                      done(result instanceof HandshakeError ? result : accepted(result))
                    )
                }
              : {}),
            destroy: () => raw.destroy()
          })
        })
        server.on("error", () => {}) // listen errors are reported below; per-socket ones on the socket
        yield* Effect.acquireRelease(
          Effect.async<void, ListenError>((resume) => {
            const onError = (error: Error) =>
              resume(Effect.fail(new ListenError({ address, detail: error.message })))
            server.once("error", onError)
            server.listen({ host: parsed.host, port: parsed.port, exclusive: true }, () => {
              server.off("error", onError)
              resume(Effect.void)
            })
          }),
          // Stop accepting; don't wait for accepted connections, which outlive the listener.
          () => Effect.sync(() => server.close())
        )
        const bound = server.address() as net.AddressInfo
        return {
          address: formatAddress(bound.address, bound.port),
          close: Effect.sync(() => {
            if (server.listening) server.close()
          })
        }
      }),
    connect: (address, expected) =>
      Effect.gen(function* () {
        const parsed = parseAddress(address)
        if (parsed === undefined) {
          return yield* new HandshakeError({ reason: "unreachable", detail: "not a host:port address" })
        }
        const { socket, pinnedPeer } = yield* flavor.connect(parsed.host, parsed.port, expected)
        track(socket)
        return {
          pipe: socketPipe(socket, address),
          destroy: () => socket.destroy(),
          ...(pinnedPeer !== undefined ? { pinnedPeer } : {})
        }
      }),
    ...(flavor.connectNow !== undefined ? { connectNow: connectNow(flavor.connectNow) } : {}),
    shutdown: Effect.sync(() => {
      for (const socket of sockets) socket.destroy()
    })
  }
}
