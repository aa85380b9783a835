import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { assert, describe, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import { Identity } from "../src/index.js"
import { fromHex, hex } from "./fixtures/plain.js"

// RFC 8032, section 7.1, test 1.
const RFC_SEED = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60"
const RFC_PUBLIC = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
const RFC_SIGNATURE =
  "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"

const tmpDir = () => fs.mkdtempSync(path.join(os.tmpdir(), "hotstuff2-identity-"))

describe("Identity", () => {
  it("derives the RFC 8032 public key and signature from its seed", () => {
    const identity = Either.getOrThrow(Identity.fromSeed(fromHex(RFC_SEED)))
    assert.strictEqual(identity.peerId, RFC_PUBLIC)
    assert.strictEqual(hex(identity.publicKey), RFC_PUBLIC)
    assert.strictEqual(hex(Identity.sign(identity, new Uint8Array(0))), RFC_SIGNATURE)
    assert.strictEqual(hex(Identity.seed(identity)), RFC_SEED)
  })

  it("verifies good signatures and refuses tampered ones, wrong keys and junk, without throwing", () => {
    const a = Either.getOrThrow(Identity.fromSeed(new Uint8Array(32).fill(1)))
    const b = Either.getOrThrow(Identity.fromSeed(new Uint8Array(32).fill(2)))
    const message = Uint8Array.of(1, 2, 3)
    const signature = Identity.sign(a, message)
    assert.isTrue(Identity.verify(a.peerId, message, signature))
    assert.isFalse(Identity.verify(b.peerId, message, signature))
    assert.isFalse(Identity.verify(a.peerId, Uint8Array.of(1, 2, 4), signature))
    const flipped = Uint8Array.from(signature)
    flipped[10]! ^= 1
    assert.isFalse(Identity.verify(a.peerId, message, flipped))
    assert.isFalse(Identity.verify(a.peerId, message, signature.subarray(0, 63)))
    // A PeerId that is not a point on the curve.
    assert.isFalse(Identity.verify("ff".repeat(32) as Identity.PeerId, message, signature))
  })

  it("generates distinct identities", () =>
    Effect.gen(function* () {
      const a = yield* Identity.generate
      const b = yield* Identity.generate
      assert.notStrictEqual(a.peerId, b.peerId)
      assert.isTrue(Identity.verify(a.peerId, Uint8Array.of(9), Identity.sign(a, Uint8Array.of(9))))
    }).pipe(Effect.runSync))

  it("refuses a seed of the wrong length", () => {
    const result = Identity.fromSeed(new Uint8Array(31))
    assert.isTrue(Either.isLeft(result) && /32 bytes, got 31/.test(result.left.reason))
  })

  it("parses PeerIds, normalising case, and says why text is not one", () => {
    const id = Identity.parsePeerId(RFC_PUBLIC.toUpperCase())
    assert.deepStrictEqual(id, Either.right(RFC_PUBLIC as Identity.PeerId))
    for (const bad of ["", "abc", `${RFC_PUBLIC}00`, `zz${RFC_PUBLIC.slice(2)}`]) {
      const result = Identity.parsePeerId(bad)
      assert.isTrue(Either.isLeft(result) && result.left._tag === "InvalidPeerId", bad)
    }
    assert.strictEqual(Identity.shortPeerId(RFC_PUBLIC as Identity.PeerId), "d75a9801")
  })

  it.effect("saves a key file readable by its owner only, loads it back, and refuses to overwrite it", () =>
    Effect.gen(function* () {
      const file = path.join(tmpDir(), "validator.key")
      const identity = Either.getOrThrow(Identity.fromSeed(fromHex(RFC_SEED)))
      yield* Identity.save(identity, file)
      assert.strictEqual(fs.statSync(file).mode & 0o777, 0o600)
      assert.match(fs.readFileSync(file, "utf8"), /BEGIN PRIVATE KEY/)
      const loaded = yield* Identity.load(file)
      assert.strictEqual(loaded.peerId, identity.peerId)
      const again = yield* Effect.flip(Identity.save(identity, file))
      assert.match(again.reason, /already exists/)
      assert.deepStrictEqual(fs.readdirSync(path.dirname(file)), ["validator.key"], "no temporary file left")
    })
  )

  it.effect("loads a hex seed file, and refuses group-readable, corrupt and missing files", () =>
    Effect.gen(function* () {
      const dir = tmpDir()
      const seedFile = path.join(dir, "seed.hex")
      fs.writeFileSync(seedFile, `${RFC_SEED}\n`, { mode: 0o600 })
      assert.strictEqual((yield* Identity.load(seedFile)).peerId, RFC_PUBLIC)

      fs.chmodSync(seedFile, 0o644)
      const open = yield* Effect.flip(Identity.load(seedFile))
      assert.match(open.reason, /chmod 600/)

      const corrupt = path.join(dir, "corrupt.key")
      fs.writeFileSync(corrupt, "-----BEGIN PRIVATE KEY-----\nnonsense\n-----END PRIVATE KEY-----\n", {
        mode: 0o600
      })
      assert.match((yield* Effect.flip(Identity.load(corrupt))).reason, /not an Ed25519/)

      const missing = yield* Effect.flip(Identity.load(path.join(dir, "absent.key")))
      assert.strictEqual(missing._tag, "IdentityFileError")
    })
  )
})
