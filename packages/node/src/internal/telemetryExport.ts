// One node's telemetry export, on the OpenTelemetry SDK: its own tracer provider (so several nodes in
// one process keep their service names apart), OTLP/HTTP export of spans and metrics, and a
// Prometheus endpoint. Loaded by telemetry.ts (a dynamic import) only when a node exports something:
// the SDK, its exporters and @effect/opentelemetry stay out of a node that exports nothing.
// Everything is released with the node's scope; span and metric buffers are flushed on release.
import * as OtelMetrics from "@effect/opentelemetry/Metrics"
import * as OtelResource from "@effect/opentelemetry/Resource"
import * as OtelTracer from "@effect/opentelemetry/Tracer"
import { Transport } from "@hotstuff2/transport"
import { OTLPMetricExporter } from "@opentelemetry/exporter-metrics-otlp-http"
import { PrometheusExporter } from "@opentelemetry/exporter-prometheus"
import { OTLPTraceExporter } from "@opentelemetry/exporter-trace-otlp-http"
import { resourceFromAttributes } from "@opentelemetry/resources"
import {
  type MetricProducer,
  type MetricReader,
  PeriodicExportingMetricReader
} from "@opentelemetry/sdk-metrics"
import { BasicTracerProvider, BatchSpanProcessor } from "@opentelemetry/sdk-trace-base"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import type * as Scope from "effect/Scope"
import type * as Tracer from "effect/Tracer"
import type { TelemetryConfig } from "../NodeConfig.js"
import { StartFailed } from "../NodeNetwork.js"
import * as Metrics from "./metrics.js"

/** What telemetry.ts decided from the config and the environment. */
export interface ExportOptions {
  readonly config: TelemetryConfig
  readonly serviceName: string
  /** The OTLP/HTTP base URL; undefined: no OTLP export. */
  readonly endpoint: string | undefined
  readonly tracing: boolean
}

/** What was started: the exporting tracer (when spans are exported) and the Prometheus address. */
export interface Exporting {
  readonly tracer: Tracer.Tracer | undefined
  readonly prometheus: string | undefined
}

const withoutSlash = (url: string) => url.replace(/\/+$/, "")

/** Starts the Prometheus endpoint; fails with `StartFailed` when its address cannot be bound. */
const servePrometheus = (address: string) =>
  Effect.async<PrometheusExporter, StartFailed>((resume) => {
    const { host, port } = Transport.parseAddress(address)!
    const created: PrometheusExporter = new PrometheusExporter(
      { host, port, endpoint: "/metrics" },
      (error) =>
        resume(
          error
            ? Effect.fail(
                new StartFailed({
                  what: "prometheus",
                  detail: `cannot serve metrics on ${address}: ${error.message}`
                })
              )
            : Effect.succeed(created)
        )
    )
    // Interrupted while binding: close the server, whichever way the bind goes.
    return Effect.promise(() => created.shutdown().catch(() => undefined))
  })

/** Starts the exporters in the scope; the Prometheus server fails with `StartFailed`. */
export const start = (options: ExportOptions): Effect.Effect<Exporting, StartFailed, Scope.Scope> =>
  Effect.gen(function* () {
    const { config, serviceName, endpoint, tracing } = options
    const resourceConfig = { serviceName, attributes: { "service.namespace": "hotstuff2" } }
    const resource = resourceFromAttributes(OtelResource.configToAttributes(resourceConfig))
    const timeoutMillis = Duration.toMillis(config.exportTimeout)

    // One finalizer for everything made below, registered before any of it: whatever was started is
    // flushed and stopped together (the Prometheus server always; exports within exportTimeout).
    // Finalizers run uninterruptibly: without `interruptible` the timeout could not cut the wait.
    let provider: BasicTracerProvider | undefined
    const readers: Array<MetricReader> = []
    yield* Effect.addFinalizer(() =>
      Effect.promise(() =>
        Promise.all([
          provider?.shutdown().catch(() => undefined),
          ...readers.map((reader) => reader.shutdown({ timeoutMillis }).catch(() => undefined))
        ])
      ).pipe(Effect.interruptible, Effect.timeoutOption(config.exportTimeout), Effect.asVoid)
    )

    let tracer: Tracer.Tracer | undefined
    if (endpoint !== undefined && tracing) {
      provider = new BasicTracerProvider({
        resource,
        spanProcessors: [
          new BatchSpanProcessor(
            new OTLPTraceExporter({ url: `${withoutSlash(endpoint)}/v1/traces`, timeoutMillis }),
            { scheduledDelayMillis: 500, exportTimeoutMillis: timeoutMillis }
          )
        ]
      })
      tracer = yield* OtelTracer.make.pipe(
        Effect.provideService(OtelTracer.OtelTracer, provider.getTracer("@hotstuff2/node"))
      )
    }

    let prometheus: string | undefined
    if (config.prometheus !== undefined) {
      readers.push(yield* servePrometheus(config.prometheus))
      prometheus = config.prometheus
    }
    if (endpoint !== undefined) {
      const exportIntervalMillis = Math.max(100, Duration.toMillis(config.metricsInterval))
      readers.push(
        new PeriodicExportingMetricReader({
          exporter: new OTLPMetricExporter({ url: `${withoutSlash(endpoint)}/v1/metrics`, timeoutMillis }),
          exportIntervalMillis,
          exportTimeoutMillis: Math.min(exportIntervalMillis, timeoutMillis)
        })
      )
    }
    if (readers.length > 0) {
      const producer = yield* OtelMetrics.makeProducer.pipe(
        Effect.provideService(OtelResource.Resource, resource)
      )
      // Per-message counts are kept outside the Effect counters between samples: flush them first.
      const flushing: MetricProducer = {
        collect: (options) => {
          Metrics.flushAll()
          return producer.collect(options)
        }
      }
      for (const reader of readers) reader.setMetricProducer(flushing)
    }

    return { tracer, prometheus } satisfies Exporting
  })
