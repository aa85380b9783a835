// One node's telemetry: its own OpenTelemetry tracer provider (so several nodes in one process keep
// their service names apart), OTLP/HTTP export of spans and metrics, and a Prometheus endpoint.
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
import * as Config from "effect/Config"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import type * as Tracer from "effect/Tracer"
import type { TelemetryConfig } from "../NodeConfig.js"
import { StartFailed } from "../NodeNetwork.js"
import * as Metrics from "./metrics.js"

export interface Telemetry {
  readonly serviceName: string
  /** Spans and trace propagation on. */
  readonly tracing: boolean
  /** This node's exporting tracer; undefined: the ambient one (the application's). */
  readonly tracer: Tracer.Tracer | undefined
  /** The Prometheus endpoint's address, when one is served. */
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

export const make = (config: TelemetryConfig, serviceName: string) =>
  Effect.gen(function* () {
    const fromEnv = yield* Config.option(Config.string("OTEL_EXPORTER_OTLP_ENDPOINT")).pipe(
      Effect.orElseSucceed(() => Option.none<string>())
    )
    const endpoint = config.otlpEndpoint ?? Option.getOrUndefined(fromEnv)
    const tracing = config.tracing ?? endpoint !== undefined
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

    return {
      serviceName,
      tracing,
      tracer,
      prometheus
    } satisfies Telemetry
  })
