/**
 * The transport over a `SimulatedNetwork`: the same connection core, handshake, limits and
 * conformance as TLS and TCP, with bytes moved by the simulation under Effect's Clock. Use it to run
 * whole clusters deterministically under `TestClock`.
 */
import { Identity } from "@hotstuff2/wire"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import { HandshakeError } from "./internal/handshake.js"
import { make } from "./internal/transport.js"
import { SimulatedNetwork } from "./SimulatedNetwork.js"
import { parseAddress, Transport } from "./Transport.js"
import * as TransportConfig from "./TransportConfig.js"
import { type InvalidTransportConfig, ListenError } from "./TransportError.js"

export interface MemoryTransportOptions {
  readonly identity: Identity.Identity
  readonly config: TransportConfig.TransportConfigInput
  /**
   * This node's host on the simulated network: it listens there and dials from there, and link
   * conditions and partitions name it. Default: `hostOf(identity.peerId)`.
   */
  readonly host?: string
  /**
   * Sign the handshake as plain TCP does. Default false: in-process peers cannot forge keys, and a
   * 100-node mesh then costs no signatures. Hellos are still checked (network, expected key, admission).
   */
  readonly verifySignatures?: boolean
}

/** The default host of a node on the simulated network: the first 8 hex characters of its PeerId. */
export const hostOf = (peer: Identity.PeerId): string => Identity.shortPeerId(peer)

/** A transport on the `SimulatedNetwork` in context. Closing the layer closes every listener and connection. */
export const layer = (
  options: MemoryTransportOptions
): Layer.Layer<Transport, InvalidTransportConfig, SimulatedNetwork> =>
  Layer.scoped(
    Transport,
    Effect.gen(function* () {
      const config = yield* TransportConfig.decode(options.config)
      const network = yield* SimulatedNetwork
      const host = options.host ?? hostOf(options.identity.peerId)
      return yield* make(options.identity, config, {
        kind: "memory",
        signatures: options.verifySignatures ?? false,
        listen: (address, onInbound) =>
          Effect.gen(function* () {
            const parsed = parseAddress(address)
            if (parsed === undefined || parsed.host !== host) {
              return yield* new ListenError({
                address,
                detail: `a memory transport listens on its own host ${host}`
              })
            }
            const binding = yield* Effect.acquireRelease(
              network.bind(address, (pipe) =>
                onInbound({
                  remoteAddress: pipe.remoteAddress,
                  remoteHost: parseAddress(pipe.remoteAddress)?.host ?? pipe.remoteAddress,
                  accept: Effect.succeed({ pipe }),
                  destroy: () => pipe.destroy()
                })
              ),
              (binding) => binding.close
            ).pipe(Effect.mapError((e) => new ListenError({ address, detail: e.message })))
            return { address: binding.address, close: binding.close }
          }),
        connect: (address) =>
          network.connect(host, address).pipe(
            Effect.map((pipe) => ({ pipe, destroy: () => pipe.destroy() })),
            Effect.mapError((e) => new HandshakeError({ reason: "unreachable", detail: e.message }))
          ),
        shutdown: Effect.void
      })
    })
  )
