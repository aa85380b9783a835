// Self-signed X.509 certificates for mutual TLS between validators, and the PeerId a peer's
// certificate proves.
//
// A validator has no CA: its identity is its Ed25519 key, and each side pins the key it expects
// (`peerIdOfCertificate` against the PeerId it dialled or allows). The certificate is only the
// envelope TLS needs to carry that key, so it holds the least TLS asks for and is built here with a
// small DER encoder rather than a certificate library.

import * as crypto from "node:crypto"
import { Identity } from "@hotstuff2/wire"

// --- DER (X.690), only the types an X.509 v3 certificate needs ---

const tlv = (tag: number, ...contents: ReadonlyArray<Uint8Array>): Uint8Array => {
  const body = Buffer.concat(contents)
  const n = body.length
  if (n < 0x80) return Buffer.concat([Uint8Array.of(tag, n), body])
  const lengthBytes: Array<number> = []
  for (let rest = n; rest > 0; rest = Math.floor(rest / 256)) lengthBytes.unshift(rest & 0xff)
  return Buffer.concat([Uint8Array.of(tag, 0x80 | lengthBytes.length, ...lengthBytes), body])
}

const sequence = (...items: ReadonlyArray<Uint8Array>) => tlv(0x30, ...items)
const set = (...items: ReadonlyArray<Uint8Array>) => tlv(0x31, ...items)
const explicit = (tagNumber: number, inner: Uint8Array) => tlv(0xa0 | tagNumber, inner)
const octetString = (bytes: Uint8Array) => tlv(0x04, bytes)
const utf8String = (text: string) => tlv(0x0c, Buffer.from(text, "utf8"))
const booleanTrue = Uint8Array.of(0x01, 0x01, 0xff)

/** A non-negative INTEGER from big-endian magnitude bytes. */
const unsignedInteger = (magnitude: Uint8Array): Uint8Array => {
  // DER wants the shortest form: no redundant leading zeros, but a 0x00 in front of a set top bit
  // or the value would read as negative.
  let start = 0
  while (start < magnitude.length - 1 && magnitude[start] === 0) start++
  const bytes = magnitude.subarray(start)
  return tlv(0x02, bytes.length === 0 || bytes[0]! & 0x80 ? Buffer.concat([Uint8Array.of(0), bytes]) : bytes)
}

/** A BIT STRING of whole bytes (keys and signatures never have unused bits). */
const bitString = (bytes: Uint8Array) => tlv(0x03, Uint8Array.of(0), bytes)

const oid = (dotted: string): Uint8Array => {
  const arcs = dotted.split(".").map(Number)
  const out: Array<number> = [arcs[0]! * 40 + arcs[1]!]
  for (const arc of arcs.slice(2)) {
    const base128: Array<number> = [arc & 0x7f]
    for (let rest = Math.floor(arc / 128); rest > 0; rest = Math.floor(rest / 128)) {
      base128.unshift(0x80 | (rest & 0x7f))
    }
    out.push(...base128)
  }
  return tlv(0x06, Uint8Array.from(out))
}

// RFC 5280 4.1.2.5: UTCTime for 1950 through 2049 (its two-digit year would misread anything
// else), GeneralizedTime otherwise; both in UTC with seconds and no fraction.
const time = (date: Date): Uint8Array => {
  const year = date.getUTCFullYear()
  if (!Number.isFinite(date.getTime()) || year < 0 || year > 9999) {
    throw new RangeError(`a certificate date must fall in years 0000-9999, got ${date.toString()}`)
  }
  const two = (n: number) => String(n).padStart(2, "0")
  const rest =
    two(date.getUTCMonth() + 1) +
    two(date.getUTCDate()) +
    two(date.getUTCHours()) +
    two(date.getUTCMinutes()) +
    two(date.getUTCSeconds()) +
    "Z"
  return year >= 1950 && year <= 2049
    ? tlv(0x17, Buffer.from(two(year % 100) + rest, "ascii"))
    : tlv(0x18, Buffer.from(String(year).padStart(4, "0") + rest, "ascii"))
}

// --- The certificate ---

/** When a certificate is valid, and its serial (random when absent). Dates keep whole seconds only. */
export interface CertificateOptions {
  readonly notBefore: Date
  readonly notAfter: Date
  /** Big-endian; at most 20 bytes and not zero (RFC 5280 4.1.2.2). */
  readonly serial?: Uint8Array
}

export interface SelfSignedCertificate {
  readonly certPem: string
  readonly keyPem: string
  readonly certDer: Uint8Array
}

// The AlgorithmIdentifier goes into the TBSCertificate and again beside the signature; the digest
// is what crypto.sign needs for it (null: Ed25519 hashes internally).
const signatureAlgorithm = (
  key: crypto.KeyObject
): { readonly identifier: Uint8Array; readonly digest: string | null } => {
  if (key.asymmetricKeyType === "ed25519") {
    // RFC 8410: the parameters are absent, not NULL.
    return { identifier: sequence(oid("1.3.101.112")), digest: null }
  }
  if (key.asymmetricKeyType === "ec" && key.asymmetricKeyDetails?.namedCurve === "prime256v1") {
    // ecdsa-with-SHA256 (RFC 5758), accepted so tests can make a certificate that is not a validator's.
    return { identifier: sequence(oid("1.2.840.10045.4.3.2")), digest: "sha256" }
  }
  throw new TypeError(`cannot sign a certificate with a ${key.asymmetricKeyType} key (Ed25519 or P-256 only)`)
}

const MAX_SERIAL_BYTES = 20

const serialNumber = (serial: Uint8Array | undefined): Uint8Array => {
  if (serial === undefined) {
    // 127 random bits: positive, and two certificates of one key practically never share a serial.
    const random = crypto.randomBytes(16)
    random[0]! &= 0x7f
    return unsignedInteger(random)
  }
  if (serial.length > MAX_SERIAL_BYTES || serial.every((b) => b === 0)) {
    throw new RangeError(`a certificate serial is 1 to 20 bytes and not zero, got ${serial.length} bytes`)
  }
  // 20 bytes with the top bit set would need a 21st for the sign; RFC 5280 lets verifiers refuse it.
  if (serial.length === MAX_SERIAL_BYTES && serial[0]! & 0x80) {
    throw new RangeError("a 20-byte certificate serial must have its top bit clear")
  }
  return unsignedInteger(serial)
}

const pem = (label: string, der: Uint8Array): string => {
  const base64 = Buffer.from(der).toString("base64")
  const lines = base64.match(/.{1,64}/g) ?? []
  return `-----BEGIN ${label}-----\n${lines.join("\n")}\n-----END ${label}-----\n`
}

/**
 * A self-signed X.509 v3 certificate with the subject and issuer `CN=<commonName>`, for any key
 * `signatureAlgorithm` knows. Validators use `selfSignedCertificate`; this exists for tests.
 * Throws a RangeError for dates or a serial that a certificate cannot hold.
 */
export const certificateForKey = (
  keys: { readonly privateKey: crypto.KeyObject; readonly publicKey: crypto.KeyObject },
  commonName: string,
  options: CertificateOptions
): Uint8Array => {
  if (options.notAfter.getTime() < options.notBefore.getTime()) {
    throw new RangeError("a certificate's notAfter comes before its notBefore")
  }
  const algorithm = signatureAlgorithm(keys.privateKey)
  const name = sequence(set(sequence(oid("2.5.4.3"), utf8String(commonName))))
  // basicConstraints, critical, with cA absent (DER omits the FALSE default): this key signs no
  // other certificate. No keyUsage: digitalSignature alone makes OpenSSL's check_issued refuse the
  // certificate as its own issuer, and adding keyCertSign without cA breaks RFC 5280 4.2.1.3.
  const extensions = sequence(sequence(oid("2.5.29.19"), booleanTrue, octetString(sequence())))
  const tbs = sequence(
    explicit(0, unsignedInteger(Uint8Array.of(2))), // v3
    serialNumber(options.serial),
    algorithm.identifier,
    name,
    sequence(time(options.notBefore), time(options.notAfter)),
    name,
    keys.publicKey.export({ format: "der", type: "spki" }),
    explicit(3, extensions)
  )
  const signature = crypto.sign(algorithm.digest, tbs, keys.privateKey)
  return sequence(tbs, algorithm.identifier, bitString(signature))
}

/**
 * The identity's TLS certificate: self-signed, Ed25519, `CN=<peerId>`, with the identity's key as
 * PKCS#8 PEM beside it. Peers trust it by pinning the key, never through a CA.
 */
export const selfSignedCertificate = (
  identity: Identity.Identity,
  options: CertificateOptions
): SelfSignedCertificate => {
  const certDer = certificateForKey(
    { privateKey: identity.privateKey, publicKey: identity.publicKeyObject },
    identity.peerId,
    options
  )
  return {
    certPem: pem("CERTIFICATE", certDer),
    keyPem: identity.privateKey.export({ format: "pem", type: "pkcs8" }) as string,
    certDer
  }
}

/**
 * The PeerId of the Ed25519 key in a peer's certificate; undefined when there is no certificate or
 * its key is not Ed25519. Never throws, since the certificate comes from the peer.
 */
export const peerIdOfCertificate = (
  cert: crypto.X509Certificate | undefined
): Identity.PeerId | undefined => {
  if (cert === undefined) return undefined
  try {
    // The JWK because Node gives no raw-key export; `x` is the 32-byte public key, base64url.
    const jwk = cert.publicKey.export({ format: "jwk" })
    if (jwk.kty !== "OKP" || jwk.crv !== "Ed25519" || typeof jwk.x !== "string") return undefined
    const key = Buffer.from(jwk.x, "base64url")
    if (key.length !== Identity.PEER_ID_BYTES) return undefined
    return Identity.peerIdFromPublicKey(key)
  } catch {
    return undefined
  }
}
