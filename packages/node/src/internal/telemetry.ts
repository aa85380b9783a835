// One node's telemetry: whether it traces, and its exporters (OTLP/HTTP spans and metrics, a
// Prometheus endpoint). The OpenTelemetry SDK behind the exporters is imported here only when the
// config or OTEL_EXPORTER_OTLP_ENDPOINT asks for an export (telemetryExport.ts): a node that exports
// nothing never loads it. Everything is released with the node's scope; span and metric buffers are
// flushed on release.
import * as Config from "effect/Config"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import type * as Tracer from "effect/Tracer"
import type { TelemetryConfig } from "../NodeConfig.js"
import { StartFailed } from "../NodeNetwork.js"

export interface Telemetry {
  readonly serviceName: string
  /** Spans and trace propagation on. */
  readonly tracing: boolean
  /** This node's exporting tracer; undefined: the ambient one (the application's). */
  readonly tracer: Tracer.Tracer | undefined
  /** The Prometheus endpoint's address, when one is served. */
  readonly prometheus: string | undefined
}

export const make = (config: TelemetryConfig, serviceName: string) =>
  Effect.gen(function* () {
    const fromEnv = yield* Config.option(Config.string("OTEL_EXPORTER_OTLP_ENDPOINT")).pipe(
      Effect.orElseSucceed(() => Option.none<string>())
    )
    const endpoint = config.otlpEndpoint ?? Option.getOrUndefined(fromEnv)
    const tracing = config.tracing ?? endpoint !== undefined
    if (endpoint === undefined && config.prometheus === undefined) {
      return { serviceName, tracing, tracer: undefined, prometheus: undefined } satisfies Telemetry
    }
    const exporters = yield* Effect.tryPromise({
      try: () => import("./telemetryExport.js"),
      catch: (error) =>
        new StartFailed({ what: "telemetry", detail: `cannot load the OpenTelemetry SDK: ${String(error)}` })
    })
    const started = yield* exporters.start({ config, serviceName, endpoint, tracing })
    return { serviceName, tracing, ...started } satisfies Telemetry
  })
