// NodeConfig: a wrong config fails at start naming the field and the expected form; JSON files and
// HOTSTUFF2_* environment variables; defaults.
import * as fs from "node:fs/promises"
import * as os from "node:os"
import * as path from "node:path"
import { assert, describe, it } from "@effect/vitest"
import { TransportConfig } from "@hotstuff2/transport"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import { NodeConfig, NodeNetwork, type StartFailed } from "../src/index.js"
import { configFor, peerId } from "./fixtures/cluster.js"

const addresses = ["127.0.0.1:9001", "127.0.0.1:9002"]
const base = configFor(0, addresses)

const fieldOf = (input: unknown) => {
  const result = NodeConfig.decode(input)
  assert.isTrue(Either.isLeft(result), "expected the config to be refused")
  return Either.isLeft(result) ? result.left : undefined!
}

describe("NodeConfig.decode", () => {
  it("fills in safe defaults", () => {
    const config = Either.getOrThrow(NodeConfig.decode(base))
    assert.strictEqual(config.transport, "tls")
    assert.isFalse(config.allowUnencrypted)
    assert.isFalse(config.admitNonValidators)
    assert.strictEqual(Duration.toMillis(config.shutdownTimeout), 2000)
    assert.strictEqual(Duration.toMillis(config.telemetry.metricsInterval), 5000)
  })

  const cases: ReadonlyArray<readonly [string, unknown, string, RegExp]> = [
    ["a listen address without a port", { ...base, listen: "localhost" }, "listen", /host:port/],
    ["a short seed", { ...base, identity: { seed: "abcd" } }, "identity.seed", /64 hex/],
    [
      "an unknown transport",
      { ...base, transport: "udp" },
      "transport",
      /"tls" \| "tcp" \| "quic" \| "memory"/
    ],
    ["a network id with a space", { ...base, networkId: "my net" }, "networkId", /A-Z a-z 0-9/],
    [
      "a validator id that is not a PeerId",
      { ...base, validators: [{ id: "xyz", addresses: [] }] },
      "validators.0.id",
      /hex/
    ],
    [
      "a validator address without a port",
      { ...base, validators: [{ id: peerId(0), addresses: ["h"] }] },
      "validators.0.addresses.0",
      /host:port/
    ],
    ["no validators", { ...base, validators: [] }, "validators", /at least 1/],
    [
      "the same validator twice",
      { ...base, validators: [base.validators[0], base.validators[0]] },
      "validators",
      /distinct/
    ],
    ["tcp without allowUnencrypted", { ...base, transport: "tcp" }, "allowUnencrypted", /must be true/],
    [
      "a bad transport limit",
      { ...base, limits: { handshakeTimeout: "soon" } },
      "limits.handshakeTimeout",
      /duration/
    ],
    [
      "a bad peers setting",
      { ...base, peers: { missedHeartbeats: 0 } },
      "peers.missedHeartbeats",
      /positive/
    ],
    [
      "a bad broadcast strategy",
      { ...base, broadcast: { strategy: "gossip" } },
      "broadcast.strategy",
      /direct/
    ],
    [
      "an OTLP endpoint that is not a URL",
      { ...base, telemetry: { otlpEndpoint: "jaeger:4318" } },
      "telemetry.otlpEndpoint",
      /URL/
    ],
    ["a misspelt field", { ...base, admitNonValidator: true }, "admitNonValidator", /not a field/],
    [
      "a misspelt transport limit",
      { ...base, limits: { maxFrameByte: 1 } },
      "limits.maxFrameByte",
      /not a field/
    ],
    [
      "a misspelt peers field",
      { ...base, peers: { banThreshhold: -5 } },
      "peers.banThreshhold",
      /not a field/
    ],
    [
      "a misspelt telemetry field",
      { ...base, telemetry: { otlpEndpont: "http://x" } },
      "telemetry.otlpEndpont",
      /not a field/
    ],
    ["limits given as an array", { ...base, limits: [1, 2] }, "limits", /object of fields/],
    [
      "a metrics interval of zero",
      { ...base, telemetry: { metricsInterval: 0 } },
      "telemetry.metricsInterval",
      /at least 100/
    ]
  ]
  for (const [name, input, field, form] of cases) {
    it(`refuses ${name}, naming ${field}`, () => {
      const error = fieldOf(input)
      assert.strictEqual(error._tag, "InvalidNodeConfig")
      assert.strictEqual(error.field, field)
      assert.match(error.detail, form)
      assert.include(error.message, field)
    })
  }
})

describe("NodeConfig.decode of a literal union", () => {
  const expected = (literals: ReadonlyArray<string>, actual: unknown) =>
    `Expected ${literals.map((l) => JSON.stringify(l)).join(" | ")}, actual ${JSON.stringify(actual)}`
  const channel = TransportConfig.defaultChannels[0]!
  const cases: ReadonlyArray<readonly [unknown, string, ReadonlyArray<string>, unknown]> = [
    [{ ...base, transport: "udp" }, "transport", NodeConfig.Transports.literals, "udp"],
    [{ ...base, transport: 5 }, "transport", NodeConfig.Transports.literals, 5],
    [
      { ...base, limits: { channels: [{ ...channel, overflow: "drop" }] } },
      "limits.channels.0.overflow",
      TransportConfig.OverflowPolicy.literals,
      "drop"
    ],
    [
      { ...base, limits: { channels: [{ ...channel, compression: "gzip" }] } },
      "limits.channels.0.compression",
      TransportConfig.ChannelConfig.fields.compression.literals,
      "gzip"
    ]
  ]
  for (const [input, field, literals, actual] of cases) {
    it(`names every value ${field} accepts and the ${JSON.stringify(actual)} given`, () => {
      const error = fieldOf(input)
      assert.strictEqual(error.field, field)
      assert.strictEqual(error.detail, expected(literals, actual))
    })
  }

  it("names every form of the identity when the value fits none of them", () => {
    const error = fieldOf({ ...base, identity: "validator.key" })
    assert.strictEqual(error.field, "identity")
    assert.match(
      error.detail,
      /\{ readonly seed: .* \} \| \{ readonly keyFile: .* \}, actual "validator.key"$/
    )
  })
})

describe("NodeConfig.withEnv and load", () => {
  it("applies HOTSTUFF2_* variables: nested by __, SNAKE_CASE to camelCase, JSON values or text", () => {
    const merged = NodeConfig.withEnv(base, {
      HOTSTUFF2_LISTEN: "0.0.0.0:9100",
      HOTSTUFF2_TELEMETRY__PROMETHEUS: "127.0.0.1:9464",
      HOTSTUFF2_PEERS__HEARTBEAT_INTERVAL: "2 seconds",
      HOTSTUFF2_ADMIT_NON_VALIDATORS: "true",
      HOTSTUFF2_LIMITS__MAX_FRAME_BYTES: "65536",
      OTHER_LISTEN: "ignored"
    })
    const config = Either.getOrThrow(NodeConfig.decode(merged))
    assert.strictEqual(config.listen, "0.0.0.0:9100")
    assert.strictEqual(config.telemetry.prometheus, "127.0.0.1:9464")
    assert.deepStrictEqual(config.peers, { heartbeatInterval: "2 seconds" })
    assert.isTrue(config.admitNonValidators)
    assert.strictEqual(config.limits?.maxFrameBytes, 65536)
    assert.strictEqual((base as { listen: string }).listen, addresses[0], "the base is not changed")
  })

  it("reads an env value as text when its JSON reading does not fit the field", () => {
    const config = Either.getOrThrow(
      NodeConfig.decodeWithEnv(base, {
        HOTSTUFF2_NETWORK_ID: "2024",
        HOTSTUFF2_TELEMETRY__SERVICE_NAME: "true",
        HOTSTUFF2_LIMITS__MAX_FRAME_BYTES: "65536"
      })
    )
    assert.strictEqual(config.networkId, "2024")
    assert.strictEqual(config.telemetry.serviceName, "true")
    assert.strictEqual(config.limits?.maxFrameBytes, 65536)
    const error = NodeConfig.decodeWithEnv(base, { HOTSTUFF2_LIMITS__MAX_FRAME_BYTES: "lots" })
    assert.isTrue(Either.isLeft(error) && error.left.field === "limits.maxFrameBytes")
  })

  it.effect("loads a JSON file with env overrides, and names the file when it is not JSON", () =>
    Effect.gen(function* () {
      const dir = yield* Effect.promise(() => fs.mkdtemp(path.join(os.tmpdir(), "hotstuff2-config-")))
      const file = path.join(dir, "node.json")
      yield* Effect.promise(() => fs.writeFile(file, JSON.stringify(base)))
      const config = yield* NodeConfig.load(file, { HOTSTUFF2_NETWORK_ID: "override-net" })
      assert.strictEqual(config.networkId, "override-net")
      yield* Effect.promise(() => fs.writeFile(file, "{ not json"))
      const error = yield* Effect.flip(NodeConfig.load(file, {}))
      assert.strictEqual(error.field, "<file>")
      assert.include(error.detail, file)
      const missing = yield* Effect.flip(NodeConfig.load(path.join(dir, "none.json"), {}))
      assert.include(missing.detail, "cannot read")
      yield* Effect.promise(() => fs.writeFile(file, JSON.stringify({ ...base, listen: 9000 })))
      const wrongField = yield* Effect.flip(NodeConfig.load(file, {}))
      assert.strictEqual(wrongField.field, "listen")
      yield* Effect.promise(() => fs.rm(dir, { recursive: true }))
    })
  )

  it.effect("NodeNetwork.layer fails at start with the config error, before opening anything", () =>
    Effect.gen(function* () {
      const exit = yield* Effect.exit(
        Layer.build(NodeNetwork.layer({ ...base, listen: "nowhere" })).pipe(Effect.scoped)
      )
      assert.isTrue(Exit.isFailure(exit))
      if (Exit.isFailure(exit)) {
        const error = exit.cause._tag === "Fail" ? exit.cause.error : undefined
        assert.strictEqual(error?._tag, "InvalidNodeConfig")
        assert.strictEqual((error as NodeConfig.InvalidNodeConfig).field, "listen")
      }
    })
  )

  it.effect("a missing key file fails with StartFailed naming the identity", () =>
    Effect.gen(function* () {
      const error = yield* Effect.flip(
        Layer.build(NodeNetwork.layer({ ...base, identity: { keyFile: "/nonexistent/key.pem" } })).pipe(
          Effect.scoped
        )
      )
      assert.strictEqual(error._tag, "StartFailed")
      assert.strictEqual((error as StartFailed).what, "identity")
    })
  )
})
