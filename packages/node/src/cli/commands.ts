// The `hotstuff2-net` command line: keygen, run, devnet, devnet-config, k8s-config.
import type * as CliApp from "@effect/cli/CliApp"
import * as Command from "@effect/cli/Command"
import * as HelpDoc from "@effect/cli/HelpDoc"
import * as Options from "@effect/cli/Options"
import * as ValidationError from "@effect/cli/ValidationError"
import * as Console from "effect/Console"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Logger from "effect/Logger"
import * as LogLevel from "effect/LogLevel"
import * as Option from "effect/Option"
import { devnet } from "./devnet.js"
import { devnetConfig } from "./devnetConfig.js"
import { Base, k8sConfig } from "./k8sConfig.js"
import { keygen } from "./keys.js"
import { run } from "./run.js"

export const VERSION = "0.1.0"

const UNITS: Record<string, (n: number) => Duration.Duration> = {
  ms: Duration.millis,
  millis: Duration.millis,
  s: Duration.seconds,
  sec: Duration.seconds,
  seconds: Duration.seconds,
  m: Duration.minutes,
  min: Duration.minutes,
  minutes: Duration.minutes,
  h: Duration.hours,
  hours: Duration.hours
}

/** `30s`, `500ms`, `2m`, `1.5 h`, `10 seconds`. */
export const parseDuration = (text: string): Option.Option<Duration.Duration> => {
  const match = /^(\d+(?:\.\d+)?)\s*([a-z]+)$/.exec(text.trim().toLowerCase())
  const unit = match ? UNITS[match[2]!] : undefined
  return match && unit ? Option.some(unit(Number(match[1]))) : Option.none()
}

const duration = (name: string, fallback: string) =>
  Options.text(name).pipe(
    Options.withPseudoName("DURATION"),
    Options.withDefault(fallback),
    Options.mapEffect((text) =>
      Option.match(parseDuration(text), {
        onNone: () =>
          Effect.fail(
            ValidationError.invalidValue(
              HelpDoc.p(`--${name}: expected a duration such as 30s, 500ms or 2m, got "${text}"`)
            )
          ),
        onSome: Effect.succeed
      })
    )
  )

const MAX_PAYLOAD = 4 * 1024 * 1024

const payload = Options.integer("payload").pipe(
  Options.withPseudoName("BYTES"),
  Options.withDescription(`Block payload size in bytes (0 to ${MAX_PAYLOAD}).`),
  Options.withDefault(1024),
  Options.mapEffect((n) =>
    n >= 0 && n <= MAX_PAYLOAD
      ? Effect.succeed(n)
      : Effect.fail(
          ValidationError.invalidValue(HelpDoc.p(`--payload: expected 0 to ${MAX_PAYLOAD} bytes, got ${n}`))
        )
  )
)

const viewTimeout = duration("view-timeout", "1s").pipe(
  Options.withDescription("Abandon a view that makes no progress for this long; the next leader proposes.")
)
const minViewTime = duration("min-view-time", "0ms").pipe(
  Options.withDescription(
    "A leader proposes no sooner than this after entering its view (paces the traffic)."
  )
)

const transport = Options.choice("transport", ["tls", "tcp", "quic"]).pipe(
  Options.withDescription(
    "TLS 1.3 with pinned keys, plain TCP (authenticated, unencrypted), or QUIC (pinned keys, a stream per channel; experimental)."
  ),
  Options.withDefault("tls" as const)
)

const keygenCommand = Command.make(
  "keygen",
  {
    out: Options.file("out").pipe(
      Options.withDescription("Where to write the key (0600; never overwritten).")
    )
  },
  ({ out }) => keygen(out)
).pipe(Command.withDescription("Generate an Ed25519 validator key, save it, print its PeerId."))

const runCommand = Command.make(
  "run",
  {
    config: Options.file("config").pipe(
      Options.withDescription(
        "The node's JSON config; HOTSTUFF2_* environment variables override its fields."
      )
    ),
    statusInterval: duration("status-interval", "10s").pipe(
      Options.withDescription("How often to log a status line.")
    ),
    drive: Options.boolean("drive").pipe(
      Options.withDescription(
        "Also run consensus-shaped traffic (proposals, votes, certificates) with the other validators."
      )
    ),
    payload,
    viewTimeout,
    minViewTime
  },
  (o) =>
    run({
      config: o.config,
      statusInterval: o.statusInterval,
      drive: o.drive
        ? Option.some({ payloadBytes: o.payload, viewTimeout: o.viewTimeout, minViewTime: o.minViewTime })
        : Option.none()
    })
).pipe(Command.withDescription("Run one validator's network from a config until SIGINT or SIGTERM."))

const devnetCommand = Command.make(
  "devnet",
  {
    validators: Options.integer("validators").pipe(
      Options.withDescription("How many validator processes."),
      Options.withDefault(4)
    ),
    transport,
    duration: duration("duration", "30s").pipe(
      Options.withDescription("How long to run once every validator is up (Ctrl-C ends it sooner).")
    ),
    payload,
    basePort: Options.integer("base-port").pipe(
      Options.withDescription("Validator i listens on 127.0.0.1:(base-port + i); default: free ports."),
      Options.optional
    ),
    viewTimeout,
    minViewTime
  },
  (o) =>
    devnet({
      validators: o.validators,
      transport: o.transport,
      duration: o.duration,
      payloadBytes: o.payload,
      basePort: o.basePort,
      viewTimeout: o.viewTimeout,
      minViewTime: o.minViewTime
    })
).pipe(
  Command.withDescription(
    "Run N validators on 127.0.0.1 as child processes with consensus-shaped traffic; a live table, then a summary."
  )
)

const devnetConfigCommand = Command.make(
  "devnet-config",
  {
    validators: Options.integer("validators").pipe(Options.withDefault(4)),
    out: Options.directory("out").pipe(
      Options.withDescription("Where to write validator-<i>.key and .json.")
    ),
    host: Options.text("host").pipe(
      Options.withDescription("Host name of validator i; {i} is replaced by i."),
      Options.withDefault("validator-{i}")
    ),
    port: Options.integer("port").pipe(Options.withDefault(9000)),
    transport,
    networkId: Options.text("network-id").pipe(Options.withDefault("hotstuff2-compose")),
    prometheusPort: Options.integer("prometheus-port").pipe(
      Options.withDescription("Serve Prometheus metrics on this port of every node."),
      Options.optional
    )
  },
  (o) =>
    devnetConfig({
      validators: o.validators,
      out: o.out,
      host: o.host,
      port: o.port,
      transport: o.transport,
      networkId: o.networkId,
      prometheusPort: Option.getOrUndefined(o.prometheusPort)
    })
).pipe(
  Command.withDescription(
    "Write keys and configs for N validators on separate hosts (docker compose); keeps an existing set."
  )
)

const k8sConfigCommand = Command.make(
  "k8s-config",
  {
    validators: Options.integer("validators").pipe(Options.withDefault(4)),
    namespace: Options.text("namespace").pipe(
      Options.withDescription("The namespace the validators run in."),
      Options.withDefault("hotstuff2")
    ),
    service: Options.text("service").pipe(
      Options.withDescription("The headless Service whose SRV records list the validators."),
      Options.withDefault(Base.service)
    ),
    port: Options.integer("port").pipe(
      Options.withDescription("The p2p port (the Service's named port p2p)."),
      Options.withDefault(Base.port)
    ),
    networkId: Options.text("network-id").pipe(Options.withDefault("hotstuff2-k8s")),
    image: Options.text("image").pipe(
      Options.withDescription("The image built from the repository's Dockerfile, name[:tag]."),
      Options.withDefault(`${Base.image}:local`)
    ),
    otlpEndpoint: Options.text("otlp-endpoint").pipe(
      Options.withDescription("OTLP/HTTP collector for spans and metrics (OTEL_EXPORTER_OTLP_ENDPOINT)."),
      Options.optional
    ),
    base: Options.directory("base").pipe(
      Options.withDescription("The kustomize base (the repository's deploy/kubernetes)."),
      Options.withDefault("deploy/kubernetes")
    ),
    out: Options.directory("out").pipe(
      Options.withDescription("Where to write kustomization.yaml, secret.yaml and configmap.yaml.")
    )
  },
  (o) => k8sConfig({ ...o, otlpEndpoint: Option.getOrUndefined(o.otlpEndpoint) })
).pipe(
  Command.withDescription(
    "Write a kustomize overlay for N validators on Kubernetes: the keys Secret, the node config, the replica count."
  )
)

const hotstuff2Net = Command.make("hotstuff2-net").pipe(
  Command.withDescription("Run and try out the HotStuff-2 network layer."),
  Command.withSubcommands([keygenCommand, runCommand, devnetCommand, devnetConfigCommand, k8sConfigCommand])
)

const runCommandLine = Command.run(hotstuff2Net, { name: "hotstuff2-net", version: VERSION })

const LOG_LEVELS = LogLevel.allLevels.map((level) => level._tag.toLowerCase())

/**
 * Takes `--log-level LEVEL` (or `--log-level=LEVEL`) out of `args` (as `process.argv`) wherever it
 * stands before a `--`: @effect/cli 0.77 takes its built-in `--log-level` only before a command's
 * own options (`run --config f --log-level debug` is an "unknown argument" there). The last one given
 * wins; a missing or unknown level is refused, naming the levels.
 */
export const takeLogLevel = (
  args: ReadonlyArray<string>
): Either.Either<
  { readonly args: ReadonlyArray<string>; readonly level: Option.Option<LogLevel.LogLevel> },
  ValidationError.ValidationError
> => {
  const rest = args.slice(0, 2)
  let level = Option.none<LogLevel.LogLevel>()
  for (let i = 2; i < args.length; i++) {
    const arg = args[i]!
    if (arg === "--") {
      rest.push(...args.slice(i))
      break
    }
    if (arg !== "--log-level" && !arg.startsWith("--log-level=")) {
      rest.push(arg)
      continue
    }
    const text = arg === "--log-level" ? args[++i] : arg.slice("--log-level=".length)
    const index = text === undefined ? -1 : LOG_LEVELS.indexOf(text.toLowerCase())
    if (index < 0) {
      const got = text === undefined ? "nothing" : `"${text}"`
      return Either.left(
        ValidationError.invalidValue(
          HelpDoc.p(`--log-level: expected one of ${LOG_LEVELS.join(", ")}, got ${got}`)
        )
      )
    }
    level = Option.some(LogLevel.allLevels[index]!)
  }
  return Either.right({ args: rest, level })
}

/**
 * Runs the command line in `args` (as `process.argv`). Usage errors are printed here, as @effect/cli
 * prints its own, and fail with a `ValidationError`.
 */
export const cli = (args: ReadonlyArray<string>): Effect.Effect<void, unknown, CliApp.CliApp.Environment> =>
  Either.match(takeLogLevel(args), {
    onLeft: (error) => Effect.zipRight(Console.error(HelpDoc.toAnsiText(error.error)), Effect.fail(error)),
    onRight: ({ args, level }) =>
      Option.match(level, {
        onNone: () => runCommandLine(args),
        onSome: (level) => runCommandLine(args).pipe(Logger.withMinimumLogLevel(level))
      })
  })
