// Keys for the CLI: `keygen`, and the identity a config names (for signing consensus messages).
import { Identity, type WireError } from "@hotstuff2/wire"
import * as Console from "effect/Console"
import * as Effect from "effect/Effect"
import { loadIdentity } from "../internal/network.js"

/** Generates an Ed25519 identity, writes it to `file` (0600, never over an existing file), prints its PeerId. */
export const keygen = (file: string): Effect.Effect<void, WireError.IdentityFileError> =>
  Effect.gen(function* () {
    const identity = yield* Identity.generate
    yield* Identity.save(identity, file)
    yield* Console.log(identity.peerId)
    yield* Console.error(
      `hotstuff2-net: wrote the key of ${Identity.shortPeerId(identity.peerId)} to ${file} (0600)`
    )
  })

/** The identity a config's `identity` field names, as NodeNetwork loads it. */
export const identityOf = loadIdentity
