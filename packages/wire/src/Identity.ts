/**
 * A validator's identity: an Ed25519 key pair. The `PeerId` is the 32-byte public key, written as
 * 64 lowercase hex characters in logs and config.
 */
import * as crypto from "node:crypto"
import * as fs from "node:fs/promises"
import * as path from "node:path"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Schema from "effect/Schema"
import { IdentityFileError, InvalidKey, InvalidPeerId } from "./WireError.js"

export const PEER_ID_BYTES = 32
export const SIGNATURE_BYTES = 64
export const SEED_BYTES = 32

/** A validator's id: its Ed25519 public key as 64 lowercase hex characters. */
export const PeerId = Schema.String.pipe(
  Schema.pattern(/^[0-9a-f]{64}$/, {
    message: () => "a PeerId is 64 lowercase hex characters (an Ed25519 public key)",
    arbitrary: () => (fc: any) =>
      fc.uint8Array({ minLength: 32, maxLength: 32 }).map((b: Uint8Array) => Buffer.from(b).toString("hex"))
  }),
  Schema.brand("PeerId"),
  Schema.annotations({ identifier: "PeerId" })
)
export type PeerId = typeof PeerId.Type

/** Parses a PeerId from its text form; accepts upper-case hex and normalises it. */
export const parsePeerId = (text: string): Either.Either<PeerId, InvalidPeerId> => {
  const normalised = text.trim().toLowerCase()
  if (/^[0-9a-f]{64}$/.test(normalised)) return Either.right(normalised as PeerId)
  return Either.left(
    new InvalidPeerId({
      input: text.length > 80 ? `${text.slice(0, 80)}...` : text,
      reason: `expected 64 hex characters (a 32-byte Ed25519 public key), got ${text.length} characters`
    })
  )
}

export const peerIdFromPublicKey = (publicKey: Uint8Array): PeerId =>
  Buffer.from(publicKey.buffer, publicKey.byteOffset, publicKey.byteLength).toString("hex") as PeerId

export const peerIdToBytes = (id: PeerId): Uint8Array => new Uint8Array(Buffer.from(id, "hex"))

/** The first 8 hex characters, for log lines. */
export const shortPeerId = (id: PeerId): string => id.slice(0, 8)

/** A key pair with its Node `KeyObject`s built once (building them per signature costs more than signing). */
export interface Identity {
  readonly peerId: PeerId
  readonly publicKey: Uint8Array
  readonly privateKey: crypto.KeyObject
  readonly publicKeyObject: crypto.KeyObject
}

// DER prefixes for Ed25519 keys (RFC 8410): PKCS#8 private key around a 32-byte seed, SPKI public key.
const PKCS8_PREFIX = Buffer.from("302e020100300506032b657004220420", "hex")
const SPKI_PREFIX = Buffer.from("302a300506032b6570032100", "hex")

const fromPrivateKey = (privateKey: crypto.KeyObject): Identity => {
  const publicKeyObject = crypto.createPublicKey(privateKey)
  const spki = publicKeyObject.export({ format: "der", type: "spki" })
  const publicKey = new Uint8Array(spki.subarray(SPKI_PREFIX.length))
  return { peerId: peerIdFromPublicKey(publicKey), publicKey, privateKey, publicKeyObject }
}

/** Builds an identity from a 32-byte Ed25519 seed (the private key as RFC 8032 defines it). */
export const fromSeed = (seed: Uint8Array): Either.Either<Identity, InvalidKey> => {
  if (seed.length !== SEED_BYTES) {
    return Either.left(new InvalidKey({ reason: `an Ed25519 seed is 32 bytes, got ${seed.length}` }))
  }
  const der = Buffer.concat([PKCS8_PREFIX, seed])
  return Either.right(fromPrivateKey(crypto.createPrivateKey({ key: der, format: "der", type: "pkcs8" })))
}

/** A fresh identity from the system's secure random source. */
export const generate: Effect.Effect<Identity> = Effect.sync(() =>
  fromPrivateKey(crypto.generateKeyPairSync("ed25519").privateKey)
)

/** The 32-byte seed, for writing into config or a key file. Handle it as a secret. */
export const seed = (identity: Identity): Uint8Array => {
  const der = identity.privateKey.export({ format: "der", type: "pkcs8" })
  return new Uint8Array(der.subarray(der.length - SEED_BYTES))
}

/** Signs bytes with the identity's private key: a 64-byte Ed25519 signature. */
export const sign = (identity: Identity, message: Uint8Array): Uint8Array =>
  crypto.sign(null, message, identity.privateKey)

const KEY_CACHE_LIMIT = 4096
const publicKeys = new Map<string, crypto.KeyObject>()

const publicKeyObject = (peer: PeerId): crypto.KeyObject | undefined => {
  let key = publicKeys.get(peer)
  if (key !== undefined) return key
  try {
    key = crypto.createPublicKey({
      key: Buffer.concat([SPKI_PREFIX, Buffer.from(peer, "hex")]),
      format: "der",
      type: "spki"
    })
  } catch {
    return undefined // not a point on the curve
  }
  // Bounded: forget the oldest key once full (a peer can name any key in a message it sends).
  if (publicKeys.size >= KEY_CACHE_LIMIT) publicKeys.delete(publicKeys.keys().next().value!)
  publicKeys.set(peer, key)
  return key
}

/** Verifies an Ed25519 signature by `peer` over `message`. Never throws: any failure is `false`. */
export const verify = (peer: PeerId, message: Uint8Array, signature: Uint8Array): boolean => {
  if (signature.length !== SIGNATURE_BYTES) return false
  const key = publicKeyObject(peer)
  if (key === undefined) return false
  try {
    return crypto.verify(null, message, key, signature)
  } catch {
    return false
  }
}

/**
 * Writes the identity as a PKCS#8 PEM file readable by its owner only (0600), atomically, and
 * refuses to overwrite an existing key: replacing a validator's key by accident is not recoverable.
 */
export const save = (identity: Identity, file: string): Effect.Effect<void, IdentityFileError> =>
  Effect.tryPromise({
    try: async () => {
      const pem = identity.privateKey.export({ format: "pem", type: "pkcs8" }) as string
      const tmp = path.join(path.dirname(file), `.${path.basename(file)}.${process.pid}.tmp`)
      await fs.writeFile(tmp, pem, { mode: 0o600, flag: "wx" })
      try {
        await fs.link(tmp, file) // fails if `file` exists, unlike rename
      } finally {
        await fs.unlink(tmp)
      }
    },
    catch: (cause) =>
      new IdentityFileError({
        path: file,
        reason:
          (cause as NodeJS.ErrnoException)?.code === "EEXIST"
            ? "a key file already exists there; refusing to overwrite it"
            : String((cause as Error)?.message ?? cause)
      })
  })

/**
 * Reads a key file written by `save` (PKCS#8 PEM) or holding a 32-byte seed as 64 hex characters.
 * Refuses a file that its group or others can read, as ssh does.
 */
export const load = (file: string): Effect.Effect<Identity, IdentityFileError> =>
  Effect.gen(function* () {
    const failWith = (reason: string) => new IdentityFileError({ path: file, reason })
    const stat = yield* Effect.tryPromise({
      try: () => fs.stat(file),
      catch: (e) => failWith(String((e as Error)?.message ?? e))
    })
    if ((stat.mode & 0o077) !== 0) {
      return yield* failWith(
        `permissions ${(stat.mode & 0o777).toString(8)} let others read the key; chmod 600 it`
      )
    }
    const text = yield* Effect.tryPromise({
      try: () => fs.readFile(file, "utf8"),
      catch: (e) => failWith(String((e as Error)?.message ?? e))
    })
    const trimmed = text.trim()
    if (/^[0-9a-fA-F]{64}$/.test(trimmed)) {
      return yield* Either.mapLeft(fromSeed(Buffer.from(trimmed, "hex")), (e) => failWith(e.reason))
    }
    return yield* Effect.try({
      try: () => {
        const key = crypto.createPrivateKey({ key: trimmed, format: "pem" })
        if (key.asymmetricKeyType !== "ed25519")
          throw new Error(`not an Ed25519 key (${key.asymmetricKeyType})`)
        return fromPrivateKey(key)
      },
      catch: (e) => failWith(`not an Ed25519 PKCS#8 PEM key or hex seed: ${(e as Error)?.message ?? e}`)
    })
  })
