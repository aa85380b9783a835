/**
 * QUIC (RFC 9000) with mutual TLS 1.3 and the same pinned Ed25519 certificates as `TlsTransport`,
 * one UDP socket per listener, each channel on a QUIC stream of its own: a lost packet of a sync
 * transfer delays only the sync stream, never a vote (no head-of-line blocking between channels).
 * Built on the quiche binding that `@matrixai/quic` ships (prebuilt for linux-x64, darwin, win32),
 * driven directly rather than through its wrapper (see `internal/quicEndpoint.ts` for why).
 * Experimental: see the package README for what it is measured to do, and when to prefer TLS.
 */
import type { Identity } from "@hotstuff2/wire"
import * as Clock from "effect/Clock"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import { selfSignedCertificate } from "./internal/certificate.js"
import { type QuicDatagramStats, quicBackend, urgencyFor } from "./internal/quicBackend.js"
import { loadQuiche, type QuicSettings } from "./internal/quicEndpoint.js"
import { make } from "./internal/transport.js"
import { Transport } from "./Transport.js"
import * as TransportConfig from "./TransportConfig.js"
import { InvalidTransportConfig } from "./TransportError.js"

/** QUIC's own settings; every limit of `TransportConfig` applies as well. */
export interface QuicOptions {
  /**
   * Largest UDP payload sent and accepted (default 1350: fits a 1400-byte path MTU; quiche here does
   * no path MTU discovery). Raise it only where every path takes it (loopback: up to 65527).
   */
  readonly maxUdpPayloadBytes?: number
  /** Bytes a peer may send on one stream before it is read (default 8 MiB). */
  readonly streamWindow?: number
  /** Bytes a peer may send over all streams before they are read (default 32 MiB). */
  readonly connectionWindow?: number
  /** A connection that heard nothing for this long is closed by QUIC (default 60 s). */
  readonly idleTimeoutMillis?: number
  /** UDP socket buffers asked of the kernel (default 8 MiB; Linux caps it at net.core.rmem_max). */
  readonly socketBufferBytes?: number
}

export interface QuicTransportOptions {
  readonly identity: Identity.Identity
  readonly config: TransportConfig.TransportConfigInput
  readonly quic?: QuicOptions
}

export const defaultQuicOptions: Required<QuicOptions> = {
  maxUdpPayloadBytes: 1350,
  streamWindow: 8 * 1024 * 1024,
  connectionWindow: 32 * 1024 * 1024,
  idleTimeoutMillis: 60_000,
  socketBufferBytes: 8 * 1024 * 1024
}

const DAY = 24 * 60 * 60 * 1000

const checkOptions = (options: Required<QuicOptions>): InvalidTransportConfig | undefined => {
  const bad = (field: string, detail: string) =>
    new InvalidTransportConfig({ field: `quic.${field}`, detail })
  if (!(options.maxUdpPayloadBytes >= 1200 && options.maxUdpPayloadBytes <= 65527))
    return bad("maxUdpPayloadBytes", "must be 1200 to 65527")
  if (!(options.streamWindow >= 64 * 1024)) return bad("streamWindow", "must be at least 64 KiB")
  if (!(options.connectionWindow >= options.streamWindow))
    return bad("connectionWindow", "must be at least streamWindow")
  if (!(options.idleTimeoutMillis >= 1000)) return bad("idleTimeoutMillis", "must be at least 1000")
  return undefined
}

/** Datagrams every QUIC listener of this process dropped before any connection existed (tests, metrics). */
export const datagramStats = (): QuicDatagramStats => ({ ...sharedStats })
const sharedStats: QuicDatagramStats = { garbage: 0, retries: 0, badTokens: 0 }

/** QUIC with pinned Ed25519 certificates. Closing the layer closes every listener and connection. */
export const layer = (options: QuicTransportOptions): Layer.Layer<Transport, InvalidTransportConfig> =>
  Layer.scoped(
    Transport,
    Effect.gen(function* () {
      const config = yield* TransportConfig.decode(options.config)
      const quic = { ...defaultQuicOptions, ...options.quic }
      const invalid = checkOptions(quic)
      if (invalid !== undefined) return yield* invalid
      const quiche = yield* Effect.tryPromise({
        try: loadQuiche,
        catch: (error) =>
          new InvalidTransportConfig({
            field: "transport",
            detail: `the native QUIC binding (@matrixai/quic) does not load here: ${String(error)}`
          })
      })
      const clock = yield* Effect.clock
      const now = yield* Clock.currentTimeMillis
      const certificate = selfSignedCertificate(options.identity, {
        notBefore: new Date(now - DAY),
        notAfter: new Date(now + 3650 * DAY)
      })
      const settings: QuicSettings = {
        certPem: certificate.certPem,
        keyPem: certificate.keyPem,
        maxUdpPayloadBytes: quic.maxUdpPayloadBytes,
        streamWindow: quic.streamWindow,
        connectionWindow: quic.connectionWindow,
        // One stream per channel and the control channel; a few spare for a peer with more channels.
        maxStreams: config.channels.length + 8,
        idleTimeoutMillis: quic.idleTimeoutMillis,
        socketBufferBytes: quic.socketBufferBytes
      }
      const levels = new Map(config.channels.map((c) => [c.id, c.priority]))
      const backend = quicBackend(
        quiche,
        settings,
        urgencyFor(levels),
        () => clock.unsafeCurrentTimeMillis(),
        sharedStats
      )
      return yield* make(options.identity, config, backend)
    })
  )
