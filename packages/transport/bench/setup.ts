// What the sender (transport.bench.ts) and the receiver process (receiver.ts) agree on: identities,
// the transport config, TLS material for the raw baselines, and the IPC messages between them.
import type * as tls from "node:tls"
import { Frame, Identity } from "@hotstuff2/wire"
import * as Either from "effect/Either"
import { TransportConfig } from "../src/index.js"
import { selfSignedCertificate } from "../src/internal/certificate.js"

/** What the receiver process runs: a raw socket baseline or our Transport, over TLS or TCP. */
export type Mode = "raw-tls" | "raw-tcp" | "transport-tls" | "transport-tcp" | "transport-quic"
export const modes: ReadonlyArray<Mode> = [
  "raw-tls",
  "raw-tcp",
  "transport-tls",
  "transport-tcp",
  "transport-quic"
]

/** QUIC's options in both processes: BENCH_QUIC_PAYLOAD sets the UDP payload (default 1350). */
export const quicOptions = {
  maxUdpPayloadBytes: Number(process.env.BENCH_QUIC_PAYLOAD ?? 1350) || 1350
}

export const isMode = (s: string | undefined): s is Mode => modes.includes(s as Mode)

export const identity = (n: number): Identity.Identity =>
  Either.getOrThrow(Identity.fromSeed(new Uint8Array(32).fill(n)))

export const senderIdentity = identity(1)
export const receiverIdentity = identity(2)

const MiB = 1024 * 1024

/**
 * Both ends: the default channels, with a consensus queue deep enough for a whole send window and
 * more (the sender queues while the socket is blocked, and retries on `Backpressure`).
 */
export const transportConfig: TransportConfig.TransportConfigInput = {
  networkId: "hotstuff2-bench",
  channels: TransportConfig.defaultChannels.map((channel) =>
    channel.id === TransportConfig.Channel.consensus
      ? { ...channel, maxQueuedFrames: 65536, maxQueuedBytes: 256 * MiB }
      : channel
  )
}

const DAY = 24 * 60 * 60 * 1000

/** A self-signed Ed25519 certificate and key for the raw TLS baseline, as the transport makes them. */
export const tlsMaterial = (id: Identity.Identity): { readonly key: string; readonly cert: string } => {
  const now = Date.now()
  const certificate = selfSignedCertificate(id, {
    notBefore: new Date(now - DAY),
    notAfter: new Date(now + 3650 * DAY)
  })
  return { key: certificate.keyPem, cert: certificate.certPem }
}

/** TLS 1.3 only, like TlsTransport (which negotiates TLS_AES_256_GCM_SHA384 with these keys). */
export const tlsVersions: Pick<tls.SecureContextOptions, "minVersion" | "maxVersion"> = {
  minVersion: "TLSv1.3",
  maxVersion: "TLSv1.3"
}

/** The baselines' framing: one message per frame on the consensus channel, as the transport sends it. */
export const encodeFrame = (message: Uint8Array): Uint8Array =>
  Either.getOrThrow(Frame.encode({ channel: TransportConfig.Channel.consensus, messages: [message] }))

/** Deterministic, incompressible-looking payload bytes. */
export const payload = (bytes: number): Uint8Array => {
  const out = new Uint8Array(bytes)
  let x = 0x9e3779b9
  for (let i = 0; i < bytes; i++) {
    x ^= x << 13
    x ^= x >>> 17
    x ^= x << 5
    out[i] = x & 0xff
  }
  return out
}
