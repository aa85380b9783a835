// Sockets as a transport backend: a node:net server and client, with a flavour that turns a raw
// socket into an authenticated byte stream (TLS with a pinned certificate, or plain TCP).
import * as net from "node:net"
import * as Effect from "effect/Effect"
import { formatAddress, type PeerId, parseAddress } from "../Transport.js"
import { type HandshakeFailure, ListenError } from "../TransportError.js"
import { HandshakeError } from "./handshake.js"
import { socketPipe } from "./socketPipe.js"
import type { Backend } from "./transport.js"

export interface SocketFlavor {
  readonly kind: "tls" | "tcp"
  readonly signatures: boolean
  /** Server side: the accepted raw socket to a byte stream, and the key its certificate proved (TLS). */
  readonly accept: (
    raw: net.Socket
  ) => Effect.Effect<{ readonly socket: net.Socket; readonly pinnedPeer?: PeerId }, HandshakeError>
  /** Client side: connect and, for TLS, check the certificate against `expectedPeer` before any byte is read. */
  readonly connect: (
    host: string,
    port: number,
    expectedPeer: PeerId
  ) => Effect.Effect<{ readonly socket: net.Socket; readonly pinnedPeer?: PeerId }, HandshakeError>
}

/** Waits for one of a socket's events; fails on 'error' or 'close' first. Removes its listeners. */
export const awaitSocket = (
  socket: net.Socket,
  event: string,
  failure: HandshakeFailure
): Effect.Effect<void, HandshakeError> =>
  Effect.async<void, HandshakeError>((resume) => {
    const done = () => {
      socket.off(event, onEvent)
      socket.off("error", onError)
      socket.off("close", onClose)
    }
    const onEvent = () => {
      done()
      resume(Effect.void)
    }
    const onError = (error: Error) => {
      done()
      resume(Effect.fail(new HandshakeError({ reason: failure, detail: error.message })))
    }
    const onClose = () => {
      done()
      resume(Effect.fail(new HandshakeError({ reason: "closed", detail: "socket closed" })))
    }
    socket.once(event, onEvent)
    socket.once("error", onError)
    socket.once("close", onClose)
    return Effect.sync(done)
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
          onInbound({
            remoteAddress,
            remoteHost: limitKey(raw.remoteAddress ?? "unknown"),
            accept: Effect.map(flavor.accept(raw), ({ socket, pinnedPeer }) => {
              if (socket !== raw) track(socket)
              return {
                pipe: socketPipe(socket, remoteAddress),
                ...(pinnedPeer !== undefined ? { pinnedPeer } : {})
              }
            }),
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
    connect: (address, expectedPeer) =>
      Effect.gen(function* () {
        const parsed = parseAddress(address)
        if (parsed === undefined) {
          return yield* new HandshakeError({ reason: "unreachable", detail: "not a host:port address" })
        }
        const { socket, pinnedPeer } = yield* flavor.connect(parsed.host, parsed.port, expectedPeer)
        track(socket)
        return {
          pipe: socketPipe(socket, address),
          destroy: () => socket.destroy(),
          ...(pinnedPeer !== undefined ? { pinnedPeer } : {})
        }
      }),
    shutdown: Effect.sync(() => {
      for (const socket of sockets) socket.destroy()
    })
  }
}
