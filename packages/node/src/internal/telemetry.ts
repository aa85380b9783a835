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
import { type MetricReader, PeriodicExportingMetricReader } from "@opentelemetry/sdk-metrics"
import { BasicTracerProvider, BatchSpanProcessor } from "@opentelemetry/sdk-trace-base"
import * as Config from "effect/Config"
import * as Duration from "effect/Duration"
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

const withoutSlash = (url: string) => url.replace(/\/+$/, "")

export const make = (config: TelemetryConfig, serviceName: string) =>
  Effect.gen(function* () {
    const fromEnv = yield* Config.option(Config.string("OTEL_EXPORTER_OTLP_ENDPOINT")).pipe(
      Effect.orElseSucceed(() => Option.none<string>())
    )
    const endpoint = config.otlpEndpoint ?? Option.getOrUndefined(fromEnv)
    const resourceConfig = { serviceName, attributes: { "service.namespace": "hotstuff2" } }
    const resource = resourceFromAttributes(OtelResource.configToAttributes(resourceConfig))

    let tracer: Tracer.Tracer | undefined
    if (endpoint !== undefined) {
      const provider = new BasicTracerProvider({
        resource,
        spanProcessors: [
          new BatchSpanProcessor(new OTLPTraceExporter({ url: `${withoutSlash(endpoint)}/v1/traces` }), {
            scheduledDelayMillis: 500
          })
        ]
      })
      yield* Effect.addFinalizer(() => Effect.promise(() => provider.shutdown().catch(() => undefined)))
      tracer = yield* OtelTracer.make.pipe(
        Effect.provideService(OtelTracer.OtelTracer, provider.getTracer("@hotstuff2/node"))
      )
    }

    const readers: Array<MetricReader> = []
    let prometheus: string | undefined
    if (config.prometheus !== undefined) {
      const { host, port } = Transport.parseAddress(config.prometheus)!
      const exporter = yield* Effect.async<PrometheusExporter, StartFailed>((resume) => {
        const created: PrometheusExporter = new PrometheusExporter(
          { host, port, endpoint: "/metrics" },
          (error) =>
            resume(
              error
                ? Effect.fail(
                    new StartFailed({
                      what: "prometheus",
                      detail: `cannot serve metrics on ${config.prometheus}: ${error.message}`
                    })
                  )
                : Effect.succeed(created)
            )
        )
      })
      prometheus = config.prometheus
      readers.push(exporter)
    }
    if (endpoint !== undefined) {
      readers.push(
        new PeriodicExportingMetricReader({
          exporter: new OTLPMetricExporter({ url: `${withoutSlash(endpoint)}/v1/metrics` }),
          exportIntervalMillis: Math.max(100, Duration.toMillis(config.metricsInterval))
        })
      )
    }
    if (readers.length > 0) {
      const producer = yield* OtelMetrics.makeProducer.pipe(
        Effect.provideService(OtelResource.Resource, resource)
      )
      yield* OtelMetrics.registerProducer(producer, () => readers as [MetricReader, ...Array<MetricReader>])
    }

    return {
      serviceName,
      tracing: config.tracing ?? endpoint !== undefined,
      tracer,
      prometheus
    } satisfies Telemetry
  })
