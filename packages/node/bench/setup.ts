// What the node benchmark's processes agree on: the validators' configs (the test fixtures' keys),
// the messages and their exact slot bytes for the raw baselines, TLS material for those baselines,
// and the IPC messages between node.bench.ts and its forked peer process (peer.ts).
import type * as tls from "node:tls"
import { PeersConfig } from "@hotstuff2/peers"
import { TransportConfig } from "@hotstuff2/transport"
import { Codec, Frame, type Identity, type Message } from "@hotstuff2/wire"
import * as Either from "effect/Either"
import type { NodeConfig } from "../src/index.js"
import { configFor, identity, proposal, vote } from "../test/fixtures/cluster.js"

type CertificateModule = typeof import("../../transport/src/internal/certificate.js")

// The certificate maker is internal to @hotstuff2/transport (no subpath export): load the compiled
// module beside the package's entry point, as the peers benchmark does.
const certificates: CertificateModule = await import(
  new URL("./internal/certificate.js", import.meta.resolve("@hotstuff2/transport")).href
)

/** What the forked peer process runs: a raw node:tls server, or a NodeNetwork validator. */
export type Mode = "raw" | "node"
export const isMode = (s: string | undefined): s is Mode => s === "raw" || s === "node"

const MiB = 1024 * 1024

/**
 * Validator `n` of a set at `addresses`: the test fixtures' config, with inbound rate limits on the
 * consensus channel lifted (the default, 20,000 messages/s, would drop a flood) and heartbeats at
 * the default 1 s. Everything else is the default: queues, frame limits, TLS.
 */
export const benchConfig = (n: number, addresses: ReadonlyArray<string>): NodeConfig.NodeConfigInput => {
  const base = configFor(n, addresses)
  return {
    ...base,
    limits: { ...base.limits, maxConnectionsPerIp: 1024 },
    peers: {
      heartbeatInterval: 1000,
      rateLimits: PeersConfig.defaultRateLimits.map((limit) =>
        limit.channel === TransportConfig.Channel.consensus
          ? { ...limit, messagesPerSecond: 1e9, bytesPerSecond: 1e6 * MiB }
          : limit
      )
    }
  }
}

export { identity, proposal, vote }

/** One message slot as `NodeNetwork.send` puts it on the wire: kind 0x00 (bare), then the codec bytes. */
export const directSlot = (message: Message.Message): Uint8Array => {
  const encoded = Either.getOrThrow(Codec.encode(message))
  const slot = Buffer.allocUnsafe(1 + encoded.length)
  slot[0] = 0
  slot.set(encoded, 1)
  return slot
}

/** The raw baselines' framing: one slot per frame on the consensus channel, as the node sends it. */
/** A slot carrying a sealed envelope (kind 0x02), as the broadcaster writes one. */
export const envelopeSlot = (sealed: Uint8Array): Uint8Array => {
  const slot = Buffer.allocUnsafe(1 + sealed.length)
  slot[0] = 2
  slot.set(sealed, 1)
  return slot
}

export const encodeFrame = (slot: Uint8Array): Uint8Array =>
  Either.getOrThrow(Frame.encode({ channel: TransportConfig.Channel.consensus, messages: [slot] }))

const DAY = 24 * 60 * 60 * 1000

/** Key and certificate of `id` as TlsTransport makes them, TLS 1.3 only, for the raw baselines. */
export const tlsMaterial = (id: Identity.Identity): tls.SecureContextOptions => {
  const now = Date.now()
  const certificate = certificates.selfSignedCertificate(id, {
    notBefore: new Date(now - DAY),
    notAfter: new Date(now + 3650 * DAY)
  })
  return { key: certificate.keyPem, cert: certificate.certPem, minVersion: "TLSv1.3", maxVersion: "TLSv1.3" }
}
