/**
 * Everything a validator's network layer needs, as one Schema-validated object: identity, listen
 * address, transport, network id, the validator set, limits, telemetry. Load it from code, from a
 * JSON file, and from `HOTSTUFF2_*` environment variables; a wrong field fails at start with its
 * path and the form it expects.
 */
import * as fs from "node:fs/promises"
import { BroadcastConfig } from "@hotstuff2/broadcast"
import { DiscoveryConfig } from "@hotstuff2/discovery"
import { PeersConfig } from "@hotstuff2/peers"
import { Transport, TransportConfig } from "@hotstuff2/transport"
import { Identity } from "@hotstuff2/wire"
import * as Arr from "effect/Array"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Option from "effect/Option"
import * as ParseResult from "effect/ParseResult"
import * as Schema from "effect/Schema"
import * as AST from "effect/SchemaAST"

const { DurationSetting } = TransportConfig

/** `host:port`, IPv6 hosts in brackets; port 0 asks the OS for a free port. */
export const Address = Schema.String.pipe(
  Schema.filter((a) => Transport.parseAddress(a) !== undefined || `expected host:port, e.g. "127.0.0.1:9000"`)
)

/** The validator's key: a 32-byte seed as 64 hex characters, or a key file written by `keygen`. */
export const IdentitySource = Schema.Union(
  Schema.Struct({
    seed: Schema.String.pipe(
      Schema.pattern(/^[0-9a-fA-F]{64}$/, { message: () => "expected a 32-byte seed as 64 hex characters" })
    )
  }),
  Schema.Struct({ keyFile: Schema.String.pipe(Schema.minLength(1)) })
)
export type IdentitySource = typeof IdentitySource.Type

export const ValidatorEntry = Schema.Struct({
  id: Identity.PeerId,
  /** Where it listens; may be left out when discovery can find it (DNS, bootstrap nodes, gossip). */
  addresses: Schema.optionalWith(Schema.Array(Address), { default: () => [] })
})
export interface ValidatorEntry extends Schema.Schema.Type<typeof ValidatorEntry> {}

/** `quic` is experimental (see the transport README); `memory` needs `NodeNetwork.layerTest`. */
export const Transports = Schema.Literal("tls", "tcp", "quic", "memory")
export type Transports = typeof Transports.Type

export const TelemetryConfig = Schema.Struct({
  /** `service.name` of this node's spans and metrics; default `hotstuff2-<first 8 hex of the PeerId>`. */
  serviceName: Schema.optional(Schema.String.pipe(Schema.minLength(1))),
  /**
   * OTLP/HTTP endpoint (e.g. `http://127.0.0.1:4318`): spans go to `/v1/traces`, metrics to
   * `/v1/metrics`. Default: the standard `OTEL_EXPORTER_OTLP_ENDPOINT`, or no export.
   */
  otlpEndpoint: Schema.optional(
    Schema.String.pipe(Schema.pattern(/^https?:\/\/[^\s]+$/, { message: () => "expected an http(s) URL" }))
  ),
  /**
   * Spans at the service boundaries and trace context in every message. Default: on when spans are
   * exported. Turn it on without an endpoint to join the application's own tracer.
   */
  tracing: Schema.optional(Schema.Boolean),
  /** A Prometheus text endpoint (`GET /metrics`) on this address; none by default. */
  prometheus: Schema.optional(Address),
  /**
   * A probe endpoint on this address (Kubernetes liveness and readiness): `GET /healthz` is 200 while
   * the node is up, `GET /readyz` 200 once it is connected to n - f - 1 of the newest set's other
   * validators (503 before); none by default. Port 0 picks a free port (`NodeNetwork.healthAddress`).
   */
  health: Schema.optional(Address),
  /** How often metrics are sampled (queue depths, RTT, scores) and pushed over OTLP. */
  metricsInterval: Schema.optionalWith(
    DurationSetting.pipe(
      Schema.filter((d) => Duration.toMillis(d) >= 100 || "expected at least 100 millis between samples")
    ),
    { default: () => Duration.seconds(5) }
  ),
  /**
   * How long one OTLP export may take, retries included, and how long closing the node waits for the
   * last spans and metrics: a collector that is down must not hold a closing node for the exporters'
   * default 10 s of retries.
   */
  exportTimeout: Schema.optionalWith(DurationSetting, { default: () => Duration.seconds(2) })
})
export type TelemetryConfig = typeof TelemetryConfig.Type

/** A nested package config: checked field by field by that package's own Schema (see `nestedIssue`). */
const PlainObject = Schema.Record({ key: Schema.String, value: Schema.Unknown }).annotations({
  message: () => "expected an object of fields"
})

/** A union's alternatives, nested unions flattened; `undefined` (an optional field left out) is not one. */
const alternatives = (ast: AST.AST): ReadonlyArray<AST.AST> =>
  AST.isUnion(ast) ? ast.types.flatMap(alternatives) : AST.isUndefinedKeyword(ast) ? [] : [ast]

const plainType = (issue: ParseResult.ParseIssue): issue is ParseResult.Type =>
  issue._tag === "Type" && issue.message === undefined && Option.isNone(AST.getMessageAnnotation(issue.ast))

const isMany = (
  issues: ParseResult.SingleOrNonEmpty<ParseResult.ParseIssue>
): issues is Arr.NonEmptyReadonlyArray<ParseResult.ParseIssue> => Array.isArray(issues)

/**
 * A value that no member of a union takes is one `Type` issue naming every alternative: Effect keeps
 * one issue per member, and the first of them alone reads `Expected "tls", actual "udp"` for a
 * transport that may also be `tcp`, `quic` or `memory`. So `Expected "tls" | "tcp" | "quic" | "memory", actual "udp"`,
 * for every literal union (transport, a channel's overflow and compression) and any
 * other union whose members all refuse the value outright. Members with their own message, or a value
 * that gets into a member and fails deeper (a struct with a bad field), keep their issues.
 */
const namingAlternatives = (issue: ParseResult.ParseIssue): ParseResult.ParseIssue => {
  switch (issue._tag) {
    case "Pointer":
      return new ParseResult.Pointer(issue.path, issue.actual, namingAlternatives(issue.issue))
    case "Refinement":
      return new ParseResult.Refinement(issue.ast, issue.actual, issue.kind, namingAlternatives(issue.issue))
    case "Transformation":
      return new ParseResult.Transformation(
        issue.ast,
        issue.actual,
        issue.kind,
        namingAlternatives(issue.issue)
      )
    case "Composite": {
      const issues: ParseResult.SingleOrNonEmpty<ParseResult.ParseIssue> = isMany(issue.issues)
        ? Arr.map(issue.issues, namingAlternatives)
        : namingAlternatives(issue.issues)
      if (AST.isUnion(issue.ast) && (isMany(issues) ? issues : [issues]).every(plainType)) {
        const members = alternatives(issue.ast)
        const expected =
          members.length === 0 || Option.isSome(AST.getMessageAnnotation(issue.ast))
            ? issue.ast
            : AST.Union.make(members)
        return new ParseResult.Type(expected, issue.actual)
      }
      return new ParseResult.Composite(issue.ast, issue.actual, issues, issue.output)
    }
    default:
      return issue
  }
}

/**
 * Decodes with `onExcessProperty: "error"`: a misspelt field (`admitNonValidator`) is an error, not
 * a default silently kept. The first issue becomes (dotted path, message); a union refusing a value
 * names all its alternatives (`namingAlternatives`).
 */
const strict = <A, I>(schema: Schema.Schema<A, I>) => {
  const decodeEither = Schema.decodeUnknownEither(schema, { onExcessProperty: "error" })
  return (input: unknown): Either.Either<A, { readonly field: string; readonly detail: string }> =>
    Either.mapLeft(decodeEither(input), (error) => {
      const [issue] = ParseResult.ArrayFormatter.formatIssueSync(namingAlternatives(error.issue))
      const detail = issue?.message ?? error.message
      return {
        field: issue?.path.join(".") || "<root>",
        detail: detail.startsWith("is unexpected") ? "is not a field of this config (misspelt?)" : detail
      }
    })
}

const decodeLimits = strict(TransportConfig.TransportConfig)
const decodePeers = strict(PeersConfig.PeersConfig)
const decodeBroadcast = strict(BroadcastConfig.BroadcastConfig)
const decodeDiscovery = strict(DiscoveryConfig.DiscoveryConfig)

const Fields = Schema.Struct({
  identity: IdentitySource,
  /** Where to listen; port 0 picks a free port (read it back from `NodeNetwork.address`). */
  listen: Address,
  transport: Schema.optionalWith(Transports, { default: () => "tls" as const }),
  /** Must be true for `tcp`: plain TCP authenticates peers but encrypts nothing. */
  allowUnencrypted: Schema.optionalWith(Schema.Boolean, { default: () => false }),
  /** Nodes of different networks refuse each other, and their signatures never verify across. */
  networkId: Schema.String.pipe(
    Schema.pattern(/^[A-Za-z0-9._-]{1,64}$/, {
      message: () => "expected 1 to 64 characters of A-Z a-z 0-9 . _ -"
    })
  ),
  /** The validator set: every member gets a connection; this node may be in it. */
  validators: Schema.Array(ValidatorEntry).pipe(Schema.minItems(1)),
  /** Admit authenticated peers outside the validator set (default false: refused at the handshake). */
  admitNonValidators: Schema.optionalWith(Schema.Boolean, { default: () => false }),
  /** Where bans and the address book survive a restart; none: in memory only. */
  dataDirectory: Schema.optional(Schema.String),
  /** On close: how long queued messages may take to flush before sockets are cut. */
  shutdownTimeout: Schema.optionalWith(DurationSetting, { default: () => Duration.seconds(2) }),
  /** Transport limits and channels (`TransportConfig`, without `networkId`). */
  limits: Schema.optional(PlainObject),
  /** Reputation, bans, redial, heartbeats, rate limits (`PeersConfig`). */
  peers: Schema.optional(PlainObject),
  /** Broadcast strategy and dedup (`BroadcastConfig`). */
  broadcast: Schema.optional(PlainObject),
  /** Where peers are found: bootstrap nodes, DNS, gossip of signed records (`DiscoveryConfig`). */
  discovery: Schema.optional(PlainObject),
  /** Validator sets tracked at once (`NodeNetwork.updateValidators`): the node admits and dials their union. */
  trackedEpochs: Schema.optionalWith(Schema.Int.pipe(Schema.between(1, 16)), { default: () => 3 }),
  /** A peer that left every tracked set keeps its connection this long (in-flight traffic ends) before it is closed. */
  leaveGrace: Schema.optionalWith(DurationSetting, { default: () => Duration.seconds(10) }),
  telemetry: Schema.optionalWith(TelemetryConfig, { default: () => TelemetryConfig.make({}) })
})

const prefixed = (prefix: string, field: string) => (field === "<root>" ? prefix : `${prefix}.${field}`)

/** Checks the nested package configs with their own Schemas, so their errors name full paths. */
const nestedIssue = (c: typeof Fields.Type): Schema.FilterOutput => {
  if (c.transport === "tcp" && !c.allowUnencrypted) {
    return { path: ["allowUnencrypted"], message: "must be true with transport tcp, which encrypts nothing" }
  }
  const checks: ReadonlyArray<readonly [string, Either.Either<unknown, { field: string; detail: string }>]> =
    [
      ["limits", decodeLimits({ ...c.limits, networkId: c.networkId })],
      ["peers", decodePeers(c.peers ?? {})],
      ["broadcast", decodeBroadcast(c.broadcast ?? {})],
      ["discovery", decodeDiscovery(c.discovery ?? {})]
    ]
  for (const [name, result] of checks) {
    if (Either.isLeft(result)) {
      return { path: prefixed(name, result.left.field).split("."), message: result.left.detail }
    }
  }
  const ids = new Set(c.validators.map((v) => v.id))
  if (ids.size !== c.validators.length)
    return { path: ["validators"], message: "validator ids must be distinct" }
  const discovery = c.discovery as DiscoveryConfig.DiscoveryConfigInput | undefined
  const found =
    c.validators.some((v) => (v.addresses ?? []).length > 0) ||
    (discovery?.bootstrap ?? []).length > 0 ||
    (discovery?.dns?.srv ?? []).length > 0
  if (!found) {
    return {
      path: ["validators"],
      message:
        "no validator has an address, and discovery has no bootstrap nodes or DNS SRV names to find them"
    }
  }
  return undefined
}

export const NodeConfig = Fields.pipe(Schema.filter(nestedIssue))

/** A validated config with defaults filled in. */
export interface NodeConfig extends Omit<typeof Fields.Type, "limits" | "peers" | "broadcast" | "discovery"> {
  readonly limits?: Omit<TransportConfig.TransportConfigInput, "networkId">
  readonly peers?: PeersConfig.PeersConfigInput
  readonly broadcast?: BroadcastConfig.BroadcastConfigInput
  readonly discovery?: DiscoveryConfig.DiscoveryConfigInput
}

/** What callers write: the config with optional fields left out. */
export interface NodeConfigInput
  extends Omit<typeof Fields.Encoded, "limits" | "peers" | "broadcast" | "discovery" | "telemetry"> {
  readonly limits?: Omit<TransportConfig.TransportConfigInput, "networkId">
  readonly peers?: PeersConfig.PeersConfigInput
  readonly broadcast?: BroadcastConfig.BroadcastConfigInput
  readonly discovery?: DiscoveryConfig.DiscoveryConfigInput
  readonly telemetry?: typeof TelemetryConfig.Encoded
}

/** A config that does not validate: the field's path, and the form it expects. */
export class InvalidNodeConfig extends Schema.TaggedError<InvalidNodeConfig>()("InvalidNodeConfig", {
  field: Schema.String,
  detail: Schema.String
}) {
  override get message() {
    return `node config ${this.field}: ${this.detail}`
  }
}

const decodeNode = strict(NodeConfig as unknown as Schema.Schema<NodeConfig, unknown>)

/** Validates and fills in defaults. Unknown fields are errors, at every level. */
export const decode = (input: unknown): Either.Either<NodeConfig, InvalidNodeConfig> =>
  Either.mapLeft(decodeNode(input), (e) => new InvalidNodeConfig(e))

const PREFIX = "HOTSTUFF2_"

const camel = (segment: string): string =>
  segment.toLowerCase().replace(/_([a-z0-9])/g, (_, c: string) => c.toUpperCase())

interface EnvOverride {
  readonly path: ReadonlyArray<string>
  readonly raw: string
  readonly value: unknown
}

const overridesOf = (env: Readonly<Record<string, string | undefined>>): ReadonlyArray<EnvOverride> =>
  Object.keys(env)
    .sort()
    .flatMap((name) => {
      const raw = env[name]
      if (!name.startsWith(PREFIX) || raw === undefined) return []
      let value: unknown = raw
      try {
        value = JSON.parse(raw)
      } catch {
        // plain text
      }
      return [{ path: name.slice(PREFIX.length).split("__").map(camel), raw, value }]
    })

const apply = (base: object, overrides: ReadonlyArray<EnvOverride>, asText: ReadonlySet<string>) => {
  const out = structuredClone(base) as Record<string, unknown>
  for (const { path, raw, value } of overrides) {
    let target = out
    for (const key of path.slice(0, -1)) {
      const next = target[key]
      const child = typeof next === "object" && next !== null && !Array.isArray(next) ? next : {}
      target[key] = child
      target = child as Record<string, unknown>
    }
    target[path[path.length - 1]!] = asText.has(path.join(".")) ? raw : value
  }
  return out
}

/**
 * Applies `HOTSTUFF2_*` environment variables over `base` (which is not changed): `__` nests, each
 * segment in SNAKE_CASE names a camelCase field, and a value that parses as JSON is taken as JSON,
 * else as text. So `HOTSTUFF2_LISTEN=0.0.0.0:9000`, `HOTSTUFF2_TELEMETRY__PROMETHEUS=127.0.0.1:9464`,
 * `HOTSTUFF2_PEERS__HEARTBEAT_INTERVAL="2 seconds"`, `HOTSTUFF2_VALIDATORS='[...]'`.
 */
export const withEnv = (
  base: object,
  env: Readonly<Record<string, string | undefined>>
): Record<string, unknown> => apply(base, overridesOf(env), new Set())

/**
 * `decode(withEnv(base, env))`, except that a variable whose JSON reading is refused is read again
 * as text: `HOTSTUFF2_NETWORK_ID=2024` is the network id "2024", not the number 2024.
 */
export const decodeWithEnv = (
  base: object,
  env: Readonly<Record<string, string | undefined>>
): Either.Either<NodeConfig, InvalidNodeConfig> => {
  const overrides = overridesOf(env)
  const retriable = new Set(overrides.filter((o) => typeof o.value !== "string").map((o) => o.path.join(".")))
  const asText = new Set<string>()
  for (;;) {
    const result = decode(apply(base, overrides, asText))
    if (Either.isRight(result) || !retriable.has(result.left.field) || asText.has(result.left.field)) {
      return result
    }
    asText.add(result.left.field)
  }
}

/** Reads a JSON config file, applies the environment's `HOTSTUFF2_*` overrides, and validates it. */
export const load = (
  file: string,
  env: Readonly<Record<string, string | undefined>> = process.env
): Effect.Effect<NodeConfig, InvalidNodeConfig> =>
  Effect.gen(function* () {
    const text = yield* Effect.tryPromise({
      try: () => fs.readFile(file, "utf8"),
      catch: (e) =>
        new InvalidNodeConfig({ field: "<file>", detail: `cannot read ${file}: ${(e as Error).message}` })
    })
    const json = yield* Effect.try({
      try: () => JSON.parse(text) as unknown,
      catch: (e) =>
        new InvalidNodeConfig({ field: "<file>", detail: `${file} is not JSON: ${(e as Error).message}` })
    })
    if (typeof json !== "object" || json === null || Array.isArray(json)) {
      return yield* new InvalidNodeConfig({ field: "<file>", detail: `${file} must hold a JSON object` })
    }
    return yield* decodeWithEnv(json, env)
  })
