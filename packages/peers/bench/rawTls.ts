// The pure TLS cost of a mesh on this machine: every pair of the same identities opens one mutual
// TLS 1.3 connection with raw node:tls (the certificates TlsTransport makes, the same secure-context
// options, session tickets off included, each side pinning the other's key), all at once, in this
// process. No framing, no hello,
// no Effect: what is left of the mesh time once this is taken away is ours.
import * as crypto from "node:crypto"
import type * as net from "node:net"
import * as tls from "node:tls"
import type { Identity } from "@hotstuff2/wire"

type CertificateModule = typeof import("../../transport/src/internal/certificate.js")

// The certificate maker is internal to @hotstuff2/transport (no subpath export): load the compiled
// module beside the package's entry point.
const certificates: CertificateModule = await import(
  new URL("./internal/certificate.js", import.meta.resolve("@hotstuff2/transport")).href
)

const DAY = 24 * 60 * 60 * 1000

/** Key and certificate per identity, and the context options, as TlsTransport makes them at start. */
const material = (
  identity: Identity.Identity
): Pick<tls.SecureContextOptions, "key" | "cert" | "minVersion" | "secureOptions"> => {
  const now = Date.now()
  const certificate = certificates.selfSignedCertificate(identity, {
    notBefore: new Date(now - DAY),
    notAfter: new Date(now + 3650 * DAY)
  })
  return {
    key: certificate.keyPem,
    cert: certificate.certPem,
    minVersion: "TLSv1.3",
    secureOptions: crypto.constants.SSL_OP_NO_TICKET
  }
}

export interface RawMeshResult {
  /** Connections opened: one per pair, or two (each side dials) with `bothWays`. */
  readonly handshakes: number
  /** From the first connect until both ends of every connection are secure and pinned. */
  readonly millis: number
  /** CPU time of this process over the same window (user + system). */
  readonly cpuMillis: number
  readonly pinFailures: number
  /** heapUsed and external growth from before the first connect to all connected, after forced GC. */
  readonly heapBytes: number
  readonly externalBytes: number
}

/** Two full GCs with a turn of the event loop between them (for objects freed by pending callbacks). */
const settledGc = async (gc: () => void) => {
  gc()
  await new Promise((resolve) => setTimeout(resolve, 20))
  gc()
}

// tls.createServer ignores a `secureContext` option: it builds its own from `key` and `cert`.
const listen = (
  options: Pick<tls.SecureContextOptions, "key" | "cert" | "minVersion" | "secureOptions">,
  onSecure: (socket: tls.TLSSocket) => void
) =>
  new Promise<tls.Server>((resolve, reject) => {
    const server = tls.createServer({ ...options, requestCert: true, rejectUnauthorized: false }, onSecure)
    server.once("error", reject)
    server.listen({ host: "127.0.0.1", port: 0, backlog: 1024 }, () => resolve(server))
  })

/**
 * Opens a connection from `i` to `j` for every pair i < j (and j to i too with `bothWays`), all
 * started in the same tick; resolves when every one is secure at both ends, then closes them all.
 */
export const rawMesh = async (
  identities: ReadonlyArray<Identity.Identity>,
  bothWays: boolean,
  gc: () => void
): Promise<RawMeshResult> => {
  const materials = identities.map(material)
  const contexts = materials.map((m) => tls.createSecureContext(m))
  const sockets: Array<net.Socket> = []
  let pinFailures = 0
  let pending = 0
  let resolveDone: () => void = () => {}
  const done = new Promise<void>((resolve) => {
    resolveDone = resolve
  })
  const settle = () => {
    if (--pending === 0) resolveDone()
  }
  const servers = await Promise.all(
    materials.map((m) =>
      listen(m, (socket) => {
        sockets.push(socket)
        socket.on("error", () => {})
        if (certificates.peerIdOfCertificate(socket.getPeerX509Certificate()) === undefined) pinFailures++
        settle()
      })
    )
  )
  const ports = servers.map((server) => (server.address() as net.AddressInfo).port)
  const pairs: Array<readonly [number, number]> = []
  for (let i = 0; i < identities.length; i++) {
    for (let j = 0; j < identities.length; j++) {
      if (i !== j && (bothWays || i < j)) pairs.push([i, j])
    }
  }
  pending = pairs.length * 2
  await settledGc(gc)
  const memoryBefore = process.memoryUsage()
  const cpuBefore = process.cpuUsage()
  const started = process.hrtime.bigint()
  for (const [i, j] of pairs) {
    const socket = tls.connect({
      host: "127.0.0.1",
      port: ports[j]!,
      secureContext: contexts[i]!,
      rejectUnauthorized: false,
      minVersion: "TLSv1.3"
    })
    socket.setNoDelay(true)
    socket.on("error", () => {})
    sockets.push(socket)
    socket.once("secureConnect", () => {
      if (certificates.peerIdOfCertificate(socket.getPeerX509Certificate()) !== identities[j]!.peerId) {
        pinFailures++
      }
      settle()
    })
  }
  await done
  const millis = Number(process.hrtime.bigint() - started) / 1e6
  const cpu = process.cpuUsage(cpuBefore)
  await settledGc(gc)
  const memoryAfter = process.memoryUsage()
  // Wait for every socket's 'close', so that the next round starts from a clean heap.
  const closed = sockets.map((socket) =>
    socket.closed ? Promise.resolve() : new Promise<void>((resolve) => socket.once("close", () => resolve()))
  )
  for (const socket of sockets) socket.destroy()
  await Promise.all(closed)
  await Promise.all(servers.map((server) => new Promise<void>((resolve) => server.close(() => resolve()))))
  return {
    handshakes: pairs.length,
    millis,
    cpuMillis: (cpu.user + cpu.system) / 1000,
    pinFailures,
    heapBytes: memoryAfter.heapUsed - memoryBefore.heapUsed,
    externalBytes: memoryAfter.external - memoryBefore.external
  }
}
