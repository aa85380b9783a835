import * as crypto from "node:crypto"
import type { AddressInfo } from "node:net"
import * as tls from "node:tls"
import { assert, describe, it } from "@effect/vitest"
import { Identity } from "@hotstuff2/wire"
import * as Either from "effect/Either"
import { certificateForKey, peerIdOfCertificate, selfSignedCertificate } from "../src/internal/certificate.js"

const serverIdentity = Either.getOrThrow(Identity.fromSeed(new Uint8Array(32).fill(1)))
const clientIdentity = Either.getOrThrow(Identity.fromSeed(new Uint8Array(32).fill(2)))

const validity = {
  notBefore: new Date("2024-05-06T07:08:09.750Z"),
  notAfter: new Date("2034-05-06T07:08:09.250Z")
}

/** Whole seconds, as a certificate keeps them. */
const toSecond = (date: Date) => Math.floor(date.getTime() / 1000) * 1000

const contains = (haystack: Uint8Array, needle: Uint8Array) =>
  Buffer.from(haystack.buffer, haystack.byteOffset, haystack.byteLength).indexOf(needle) >= 0

const derTime = (tag: number, text: string) =>
  Buffer.concat([Uint8Array.of(tag, text.length), Buffer.from(text)])

/**
 * A guard, not a measure: generous for a loaded 2-core CI machine (a handshake here takes
 * milliseconds), and under the test timeout (30 s).
 */
const HANG_GUARD_MS = 15_000

/** Fails instead of hanging when a handshake never completes, so `finally` still cleans up. */
const within = <A>(ms: number, what: string, promise: Promise<A>): Promise<A> => {
  let timer: NodeJS.Timeout | undefined
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} did not finish within ${ms} ms`)), ms)
  })
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer))
}

interface Seen {
  readonly peerId: Identity.PeerId | undefined
  readonly protocol: string | null
  readonly raw: Buffer | undefined
}

const seen = (socket: tls.TLSSocket): Seen => {
  const cert = socket.getPeerX509Certificate()
  return { peerId: peerIdOfCertificate(cert), protocol: socket.getProtocol(), raw: cert?.raw }
}

/**
 * One mutual TLS 1.3 handshake on 127.0.0.1: what the server sees of the client in
 * `secureConnection`, and what the client sees of the server on `secureConnect`.
 */
const handshake = async (
  server: Identity.Identity,
  client: Identity.Identity | undefined
): Promise<{ readonly server: Seen; readonly client: Seen }> => {
  const serverCert = selfSignedCertificate(server, validity)
  const listener = tls.createServer({
    key: serverCert.keyPem,
    cert: serverCert.certPem,
    requestCert: true,
    rejectUnauthorized: false,
    minVersion: "TLSv1.3"
  })
  const sockets: Array<{ destroy: () => void }> = []
  listener.on("connection", (socket) => sockets.push(socket))
  try {
    const serverSaw = new Promise<Seen>((resolve, reject) => {
      listener.once("secureConnection", (socket) => resolve(seen(socket)))
      listener.once("tlsClientError", reject)
    })
    await within(
      HANG_GUARD_MS,
      "listen",
      new Promise<void>((resolve, reject) => {
        listener.once("error", reject)
        listener.listen(0, "127.0.0.1", resolve)
      })
    )
    const clientCert = client === undefined ? undefined : selfSignedCertificate(client, validity)
    const socket = tls.connect({
      host: "127.0.0.1",
      port: (listener.address() as AddressInfo).port,
      ...(clientCert === undefined ? {} : { key: clientCert.keyPem, cert: clientCert.certPem }),
      rejectUnauthorized: false,
      minVersion: "TLSv1.3"
    })
    sockets.push(socket)
    const clientSaw = new Promise<Seen>((resolve, reject) => {
      socket.once("secureConnect", () => resolve(seen(socket)))
      socket.once("error", reject)
    })
    const [serverSide, clientSide] = await within(
      HANG_GUARD_MS,
      "handshake",
      Promise.all([serverSaw, clientSaw])
    )
    return { server: serverSide, client: clientSide }
  } finally {
    for (const socket of sockets) socket.destroy()
    await within(
      HANG_GUARD_MS,
      "server close",
      new Promise<void>((resolve) => listener.close(() => resolve()))
    )
  }
}

describe("certificate", () => {
  it("is a self-signed X.509 v3 Ed25519 certificate for CN=<peerId> with the requested validity", () => {
    const cert = selfSignedCertificate(serverIdentity, validity)
    const x509 = new crypto.X509Certificate(cert.certDer)
    assert.isTrue(x509.verify(x509.publicKey))
    assert.isTrue(x509.checkIssued(x509))
    assert.strictEqual(x509.subject, `CN=${serverIdentity.peerId}`)
    assert.strictEqual(x509.issuer, `CN=${serverIdentity.peerId}`)
    assert.isFalse(x509.ca)
    assert.strictEqual(x509.publicKey.asymmetricKeyType, "ed25519")
    assert.strictEqual(Date.parse(x509.validFrom), toSecond(validity.notBefore))
    assert.strictEqual(Date.parse(x509.validTo), toSecond(validity.notAfter))
    assert.match(x509.serialNumber, /^[0-9A-F]+$/)
    assert.isTrue(BigInt(`0x${x509.serialNumber}`) > 0n)
    // The PEM is the same certificate, and the key is the identity's.
    assert.deepStrictEqual(new crypto.X509Certificate(cert.certPem).raw, x509.raw)
    assert.isTrue(x509.checkPrivateKey(crypto.createPrivateKey(cert.keyPem)))
    assert.strictEqual(cert.keyPem, serverIdentity.privateKey.export({ format: "pem", type: "pkcs8" }))
  })

  it("draws a fresh random positive serial per certificate, and keeps a given one positive", () => {
    const serials = new Set<string>()
    for (let i = 0; i < 32; i++) {
      const serial = new crypto.X509Certificate(selfSignedCertificate(serverIdentity, validity).certDer)
        .serialNumber
      assert.match(serial, /^[0-9A-F]+$/) // OpenSSL prints a negative serial with a leading "-"
      serials.add(serial)
    }
    assert.strictEqual(serials.size, 32)
    // Top bit set: DER needs a leading zero byte, or the serial would read as -32767.
    const cert = selfSignedCertificate(serverIdentity, { ...validity, serial: Uint8Array.of(0x80, 0x01) })
    assert.strictEqual(new crypto.X509Certificate(cert.certDer).serialNumber, "8001")
    assert.isTrue(contains(cert.certDer, Uint8Array.of(0x02, 0x03, 0x00, 0x80, 0x01)))
    assert.throws(
      () => selfSignedCertificate(serverIdentity, { ...validity, serial: new Uint8Array(4) }),
      RangeError
    )
    assert.throws(
      () => selfSignedCertificate(serverIdentity, { ...validity, serial: new Uint8Array(21).fill(1) }),
      RangeError
    )
  })

  it("writes UTCTime through 2049 and GeneralizedTime from 2050 (RFC 5280)", () => {
    const notBefore = new Date("2049-12-31T23:59:59Z")
    const notAfter = new Date("2050-01-01T00:00:00Z")
    const cert = selfSignedCertificate(serverIdentity, { notBefore, notAfter })
    assert.isTrue(contains(cert.certDer, derTime(0x17, "491231235959Z")))
    assert.isTrue(contains(cert.certDer, derTime(0x18, "20500101000000Z")))
    const x509 = new crypto.X509Certificate(cert.certDer)
    assert.strictEqual(Date.parse(x509.validFrom), notBefore.getTime())
    assert.strictEqual(Date.parse(x509.validTo), notAfter.getTime())
    // A two-digit year before 1950 would read as 20xx, so those dates are GeneralizedTime too.
    const old = selfSignedCertificate(serverIdentity, {
      notBefore: new Date("1949-06-01T00:00:00Z"),
      notAfter
    })
    assert.isTrue(contains(old.certDer, derTime(0x18, "19490601000000Z")))
    assert.strictEqual(Date.parse(new crypto.X509Certificate(old.certDer).validFrom), Date.UTC(1949, 5, 1))
    assert.throws(
      () => selfSignedCertificate(serverIdentity, { notBefore: notAfter, notAfter: notBefore }),
      RangeError
    )
    assert.throws(
      () => selfSignedCertificate(serverIdentity, { notBefore: new Date(Number.NaN), notAfter }),
      RangeError
    )
  })

  it("fails verification when one byte of the signature changes", () => {
    const der = Buffer.from(selfSignedCertificate(serverIdentity, validity).certDer)
    der[der.length - 1]! ^= 0x01 // the signature BIT STRING ends the certificate
    const x509 = new crypto.X509Certificate(der)
    assert.isFalse(x509.verify(x509.publicKey))
  })

  it("gives the PeerId of an Ed25519 certificate, and undefined for none or a P-256 one", () => {
    const x509 = new crypto.X509Certificate(selfSignedCertificate(clientIdentity, validity).certDer)
    assert.strictEqual(peerIdOfCertificate(x509), clientIdentity.peerId)
    assert.isUndefined(peerIdOfCertificate(undefined))
    const p256 = crypto.generateKeyPairSync("ec", { namedCurve: "P-256" })
    const foreign = new crypto.X509Certificate(certificateForKey(p256, clientIdentity.peerId, validity))
    // A valid certificate naming the peer, so only its key type can make the answer undefined.
    assert.isTrue(foreign.verify(foreign.publicKey))
    assert.strictEqual(foreign.subject, `CN=${clientIdentity.peerId}`)
    assert.isUndefined(peerIdOfCertificate(foreign))
  })

  it("lets both sides of a mutual TLS 1.3 connection learn each other's PeerId", async () => {
    const { client, server } = await handshake(serverIdentity, clientIdentity)
    assert.strictEqual(server.peerId, clientIdentity.peerId)
    assert.strictEqual(client.peerId, serverIdentity.peerId)
    assert.strictEqual(server.protocol, "TLSv1.3")
    assert.strictEqual(client.protocol, "TLSv1.3")
  })

  it("shows the server no PeerId when the client sends no certificate", async () => {
    const { client, server } = await handshake(serverIdentity, undefined)
    assert.isUndefined(server.raw)
    assert.isUndefined(server.peerId)
    assert.strictEqual(client.peerId, serverIdentity.peerId)
    assert.strictEqual(server.protocol, "TLSv1.3")
  })
})
