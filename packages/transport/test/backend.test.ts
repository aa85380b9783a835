// A backend written only against the public seam (`TransportBackend`), as a user would: plain
// node:net sockets, no certificate (so the handshake signs), held to the same conformance suite,
// imported the way a user imports it.
import * as net from "node:net"
import { type Transport, TransportBackend } from "@hotstuff2/transport"
import { conformance } from "@hotstuff2/transport/conformance"
import * as Effect from "effect/Effect"

const split = (address: string) => {
  const at = address.lastIndexOf(":")
  return { host: address.slice(0, at), port: Number(address.slice(at + 1)) }
}

const userBackend: Effect.Effect<TransportBackend.Backend> = Effect.sync(() => {
  const sockets = new Set<net.Socket>()
  const own = (socket: net.Socket) => {
    sockets.add(socket)
    socket.on("error", () => {})
    socket.once("close", () => sockets.delete(socket))
    return socket
  }
  return {
    kind: "user-tcp",
    signatures: true,
    listen: (address, onInbound) =>
      Effect.gen(function* () {
        const { host, port } = split(address)
        const server = net.createServer({ noDelay: true }, (raw) => {
          own(raw)
          const remote = `${raw.remoteAddress}:${raw.remotePort}`
          onInbound({
            remoteAddress: remote,
            remoteHost: TransportBackend.limitKey(raw.remoteAddress ?? "unknown"),
            accept: Effect.succeed({ pipe: TransportBackend.socketPipe(raw, remote) }),
            destroy: () => raw.destroy()
          })
        })
        server.on("error", () => {})
        yield* Effect.acquireRelease(
          Effect.async<void>((resume) => {
            server.listen({ host, port }, () => resume(Effect.void))
          }),
          () => Effect.sync(() => server.close())
        )
        const bound = server.address() as net.AddressInfo
        return { address: `${bound.address}:${bound.port}`, close: Effect.sync(() => server.close()) }
      }),
    connect: (address: string, _expected: Transport.Expected) =>
      Effect.async<TransportBackend.Connected, TransportBackend.HandshakeError>((resume) => {
        const { host, port } = split(address)
        const socket = own(net.connect({ host, port, noDelay: true }))
        socket.once("connect", () =>
          resume(
            Effect.succeed({
              pipe: TransportBackend.socketPipe(socket, address),
              destroy: () => socket.destroy()
            })
          )
        )
        socket.once("error", (e) =>
          resume(
            Effect.fail(new TransportBackend.HandshakeError({ reason: "unreachable", detail: e.message }))
          )
        )
        return Effect.sync(() => socket.destroy())
      }),
    shutdown: Effect.sync(() => {
      for (const socket of sockets) socket.destroy()
    })
  }
})

conformance({
  name: "a user's backend through TransportBackend.layer",
  clock: "live",
  layer: (identity, config) => TransportBackend.layer({ identity, config, backend: userBackend }),
  listenAddress: () => "127.0.0.1:0",
  provide: (effect) => effect
})
