/**
 * The seam under every transport: a `Backend` says how bytes move between two endpoints (sockets,
 * QUIC streams, a simulated link) and, where it can, which key the remote proved (a certificate).
 * `make`/`layer` put the transport on it: the handshake (network id, version, nonces, replay cache,
 * signatures where the backend proves nothing), admission, every limit of `TransportConfig`, the
 * prioritised channels, backpressure, refusals and clean close. TLS, TCP, QUIC and the simulated
 * network are backends; a user's backend is held to the same contract by the conformance suite
 * (`@hotstuff2/transport/conformance`).
 *
 * A backend's contract:
 * - `listen(address, onInbound)` binds (port 0 allowed; return the bound address) and calls
 *   `onInbound` for each attempt, before anything costly: the transport applies the per-IP,
 *   handshake and connection limits there, and calls the attempt's `destroy` to refuse it.
 *   `remoteHost` is the key of the per-IP limit (`limitKey` gives an IPv4 address or IPv6 /64).
 * - `accept`/`acceptNow` finish what the backend does before the handshake (a TLS handshake) and
 *   give a `Pipe`, with `pinnedPeer` when a certificate proved the remote's key. `connect`/
 *   `connectNow` do the same outbound, and must refuse (reason `identity-mismatch`) a proven key
 *   that `expected` does not accept (`Transport.expects`). A backend that proves no key sets
 *   `signatures: true`: the handshake then signs both hellos.
 * - Failures are `HandshakeError`s with a `HandshakeFailure` reason; nothing may throw, reject or
 *   emit an unhandled 'error' (guard native handles).
 * - `shutdown` cuts whatever the backend still holds, after connections had their goodbye.
 * - The `Pipe` contract is in `Pipe`'s doc: ordered bytes, `write` false past a high-water mark and
 *   `drain` after, `pause` stops delivery, `close` exactly once, `end` after the bytes written.
 *   A pipe that carries channels on streams of its own (QUIC's) may also implement `opened` (the
 *   frame limit after the handshake) and `takesUrgent` (votes while blocked on a bulk backlog).
 */
import type { Identity } from "@hotstuff2/wire"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import type * as Scope from "effect/Scope"
import * as internal from "./internal/transport.js"
import { Transport, type TransportShape } from "./Transport.js"
import * as TransportConfig from "./TransportConfig.js"
import type { InvalidTransportConfig } from "./TransportError.js"

export { HandshakeError } from "./internal/handshake.js"
export { HANDSHAKE_FRAME_BYTES, type Pipe, type PipeHandlers } from "./internal/pipe.js"
export { limitKey } from "./internal/socketBackend.js"
export { socketPipe } from "./internal/socketPipe.js"
export type { Accepted, Backend, Connected, InboundAttempt } from "./internal/transport.js"

/** The transport on `backend`, living in the current scope (closing it closes every connection). */
export const make = (
  identity: Identity.Identity,
  config: TransportConfig.TransportConfig,
  backend: internal.Backend
): Effect.Effect<TransportShape, never, Scope.Scope> => internal.make(identity, config, backend)

export interface BackendTransportOptions<R> {
  readonly identity: Identity.Identity
  readonly config: TransportConfig.TransportConfigInput
  /** The backend, built in the layer's scope (it may acquire sockets and release them there). */
  readonly backend: Effect.Effect<internal.Backend, never, Scope.Scope | R>
}

/** A `Transport` layer on a backend of your own. */
export const layer = <R = never>(
  options: BackendTransportOptions<R>
): Layer.Layer<Transport, InvalidTransportConfig, Exclude<R, Scope.Scope>> =>
  Layer.scoped(
    Transport,
    Effect.gen(function* () {
      const config = yield* TransportConfig.decode(options.config)
      const backend = yield* options.backend
      return yield* internal.make(options.identity, config, backend)
    })
  )
