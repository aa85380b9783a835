// `devnet-config`: key files and node configs for a validator set on separate hosts (docker compose):
// validator i listens on 0.0.0.0:PORT and is reached at HOST(i):PORT.
import * as fs from "node:fs/promises"
import * as path from "node:path"
import { Identity, type WireError } from "@hotstuff2/wire"
import * as Console from "effect/Console"
import * as Effect from "effect/Effect"
import type { NodeConfigInput } from "../NodeConfig.js"
import { DevnetFailed } from "./devnet.js"

export interface DevnetConfigOptions {
  readonly validators: number
  readonly out: string
  /** Host name of validator i: `{i}` is replaced by i. */
  readonly host: string
  readonly port: number
  readonly transport: "tls" | "tcp" | "quic"
  readonly networkId: string
  /** Serve Prometheus metrics on this port of every node (0.0.0.0). */
  readonly prometheusPort: number | undefined
}

const exists = (file: string) =>
  Effect.promise(() =>
    fs.access(file).then(
      () => true,
      () => false
    )
  )

/**
 * Writes `validator-<i>.key` (0600) and `validator-<i>.json` for i in 0..N-1. When every config is
 * there already it keeps them (so a compose `up` after the first is a no-op); a key file in the way
 * of a new set fails, as `keygen` does.
 */
export const devnetConfig = (
  options: DevnetConfigOptions
): Effect.Effect<void, DevnetFailed | WireError.IdentityFileError> =>
  Effect.gen(function* () {
    const n = options.validators
    if (!Number.isInteger(n) || n < 1 || n > 128) {
      return yield* new DevnetFailed({ reason: `--validators must be 1 to 128, got ${n}` })
    }
    const out = path.resolve(options.out)
    const configFile = (i: number) => path.join(out, `validator-${i}.json`)
    const present = yield* Effect.forEach(
      Array.from({ length: n }, (_, i) => configFile(i)),
      exists
    )
    if (present.every((p) => p)) {
      yield* Console.log(`hotstuff2-net: ${n} validator configs in ${out} already; keeping them`)
      return
    }
    yield* Effect.promise(() => fs.mkdir(out, { recursive: true }))
    const identities = yield* Effect.forEach(present, () => Identity.generate)
    const keyFiles = identities.map((_, i) => path.join(out, `validator-${i}.key`))
    yield* Effect.forEach(identities, (identity, i) => Identity.save(identity, keyFiles[i]!))
    const hostOf = (i: number) => options.host.replaceAll("{i}", String(i))
    for (let i = 0; i < n; i++) {
      const config: NodeConfigInput = {
        identity: { keyFile: keyFiles[i]! },
        listen: `0.0.0.0:${options.port}`,
        transport: options.transport,
        allowUnencrypted: options.transport === "tcp",
        networkId: options.networkId,
        validators: identities.map((v, j) => ({ id: v.peerId, addresses: [`${hostOf(j)}:${options.port}`] })),
        telemetry: {
          serviceName: `hotstuff2-${hostOf(i)}`,
          ...(options.prometheusPort === undefined ? {} : { prometheus: `0.0.0.0:${options.prometheusPort}` })
        }
      }
      yield* Effect.promise(() => fs.writeFile(configFile(i), `${JSON.stringify(config, null, 2)}\n`))
      yield* Console.log(`${identities[i]!.peerId}  ${hostOf(i)}:${options.port}  ${configFile(i)}`)
    }
  })
