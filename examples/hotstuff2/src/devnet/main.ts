// `hotstuff2-devnet`: the reference app as a local devnet (see Devnet.ts). Exits 0 when every
// validator ran to the end and all of them committed the same chain, 1 otherwise, 2 on bad arguments.
import { parseArgs } from "node:util"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import { type DevnetOptions, run, type ScheduledEvent } from "./Devnet.js"

const USAGE = `usage: hotstuff2-devnet [options]
  --validators <n>        validators (default 4)
  --duration <time>       how long they run once all are up: 30s, 2m, 500ms (default 30s)
  --payload-bytes <n>     bytes of each proposed block body (default 256)
  --base-timeout <ms>     the view timer after progress (default 1000)
  --data <dir>            keys and ledgers here, kept (default: a temporary directory, removed)
  --kill <i>@<time>       SIGKILL validator i this long into the run (repeatable)
  --restart <i>@<time>    start it again with its key and data (repeatable)
  --otlp <url>            every validator's spans and metrics to this OTLP/HTTP collector,
                          e.g. http://127.0.0.1:4318 (Jaeger all-in-one)
  --verbose               forward the validators' logs to stderr
`

/** `30s`, `2m`, `500ms`, `30` (seconds), or anything `Duration.decode` reads ("30 seconds"). */
export const parseDuration = (text: string): Duration.Duration | undefined => {
  const match = /^(\d+(?:\.\d+)?)(ms|s|m)?$/.exec(text.trim())
  if (match !== null) {
    const value = Number(match[1])
    return match[2] === "ms"
      ? Duration.millis(value)
      : match[2] === "m"
        ? Duration.minutes(value)
        : Duration.seconds(value)
  }
  try {
    return Duration.decode(text as Duration.DurationInput)
  } catch {
    return undefined
  }
}

const parseEvent = (text: string): ScheduledEvent | undefined => {
  const [index, at] = text.split("@")
  const duration = at === undefined ? undefined : parseDuration(at)
  if (index === undefined || !/^\d+$/.test(index) || duration === undefined) return undefined
  return { index: Number(index), at: duration }
}

const positive = (text: string | undefined, name: string): number | undefined => {
  if (text === undefined) return undefined
  const value = Number(text)
  if (!Number.isInteger(value) || value < 1)
    throw new Error(`--${name} must be a positive integer, got ${text}`)
  return value
}

const parse = (argv: ReadonlyArray<string>): DevnetOptions => {
  const { values } = parseArgs({
    args: [...argv],
    options: {
      validators: { type: "string" },
      duration: { type: "string" },
      "payload-bytes": { type: "string" },
      "base-timeout": { type: "string" },
      data: { type: "string" },
      kill: { type: "string", multiple: true },
      restart: { type: "string", multiple: true },
      otlp: { type: "string" },
      verbose: { type: "boolean" },
      help: { type: "boolean", short: "h" }
    },
    strict: true
  })
  if (values.help === true) {
    process.stdout.write(USAGE)
    process.exit(0)
  }
  const events = (name: "kill" | "restart") =>
    (values[name] ?? []).map((text) => {
      const event = parseEvent(text)
      if (event === undefined) throw new Error(`--${name} takes <index>@<time>, e.g. 1@10s; got ${text}`)
      return event
    })
  const duration = values.duration === undefined ? undefined : parseDuration(values.duration)
  if (values.duration !== undefined && duration === undefined) {
    throw new Error(`--duration: not a duration: ${values.duration}`)
  }
  if (values.otlp !== undefined && !/^https?:\/\/\S+$/.test(values.otlp)) {
    throw new Error(`--otlp takes an http(s) URL, e.g. http://127.0.0.1:4318; got ${values.otlp}`)
  }
  const validators = positive(values.validators, "validators")
  const payloadBytes = positive(values["payload-bytes"], "payload-bytes")
  const baseTimeout = positive(values["base-timeout"], "base-timeout")
  return {
    ...(validators === undefined ? {} : { validators }),
    ...(duration === undefined ? {} : { duration }),
    ...(payloadBytes === undefined ? {} : { payloadBytes }),
    ...(baseTimeout === undefined ? {} : { baseTimeout }),
    ...(values.data === undefined ? {} : { dataDirectory: values.data }),
    ...(values.otlp === undefined ? {} : { otlpEndpoint: values.otlp }),
    kills: events("kill"),
    restarts: events("restart"),
    verbose: values.verbose === true
  }
}

let options: DevnetOptions
try {
  options = parse(process.argv.slice(2))
} catch (e) {
  process.stderr.write(`hotstuff2-devnet: ${(e as Error).message}\n${USAGE}`)
  process.exit(2)
}

Effect.runPromiseExit(run(options)).then((exit) => {
  if (Exit.isFailure(exit)) {
    const error = exit.cause._tag === "Fail" ? exit.cause.error.message : String(exit.cause)
    process.stderr.write(`hotstuff2-devnet: ${error}\n`)
    process.exitCode = 1
  }
})
