/**
 * Plain TCP: authenticated by a signed challenge-response handshake, NOT encrypted. For trusted
 * networks and benchmarks only, and only when asked for explicitly (`allowUnencrypted: true`).
 * Each side signs both hellos, including the other's fresh nonce, so a recorded handshake cannot be
 * replayed; a man in the middle can still read and alter traffic after it.
 */
import * as net from "node:net"
import type { Identity } from "@hotstuff2/wire"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import { HandshakeError } from "./internal/handshake.js"
import { awaitSocket, type SocketFlavor, socketBackend } from "./internal/socketBackend.js"
import { make } from "./internal/transport.js"
import { Transport } from "./Transport.js"
import * as TransportConfig from "./TransportConfig.js"
import type { InvalidTransportConfig } from "./TransportError.js"

export interface TcpTransportOptions {
  readonly identity: Identity.Identity
  readonly config: TransportConfig.TransportConfigInput
  /** Must be true: a reminder, where the layer is built, that nothing is encrypted. */
  readonly allowUnencrypted: true
}

const tcpFlavor: SocketFlavor = {
  kind: "tcp",
  signatures: true,
  accept: (socket) => Effect.succeed({ socket }),
  connect: (host, port) =>
    Effect.gen(function* () {
      const socket = net.connect({ host, port, noDelay: true })
      socket.on("error", () => {})
      yield* awaitSocket(socket, "connect", "unreachable").pipe(
        Effect.onError(() => Effect.sync(() => socket.destroy()))
      )
      return { socket }
    })
}

/** Plain TCP with a signed handshake. Closing the layer closes every listener and connection. */
export const layer = (options: TcpTransportOptions): Layer.Layer<Transport, InvalidTransportConfig> =>
  Layer.scoped(
    Transport,
    Effect.gen(function* () {
      if (options.allowUnencrypted !== true) {
        return yield* Effect.die(
          new HandshakeError({ reason: "protocol", detail: "TcpTransport needs allowUnencrypted: true" })
        )
      }
      const config = yield* TransportConfig.decode(options.config)
      return yield* make(options.identity, config, socketBackend(tcpFlavor))
    })
  )
