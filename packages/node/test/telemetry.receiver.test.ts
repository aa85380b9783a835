// The OTLP receiver fixture reads protobuf bodies as it reads JSON ones: the same spans and metrics,
// serialized both ways by OpenTelemetry's own serializers, decode to the same records.
import * as http from "node:http"
import * as zlib from "node:zlib"
import * as OtelMetrics from "@effect/opentelemetry/Metrics"
import * as OtelResource from "@effect/opentelemetry/Resource"
import { assert, it } from "@effect/vitest"
import { OtlpReceiver as Otlp } from "@hotstuff2/testing"
import { ROOT_CONTEXT, trace } from "@opentelemetry/api"
import {
  JsonMetricsSerializer,
  JsonTraceSerializer,
  ProtobufMetricsSerializer,
  ProtobufTraceSerializer
} from "@opentelemetry/otlp-transformer"
import { resourceFromAttributes } from "@opentelemetry/resources"
import {
  BasicTracerProvider,
  InMemorySpanExporter,
  type ReadableSpan,
  SimpleSpanProcessor
} from "@opentelemetry/sdk-trace-base"
import * as Effect from "effect/Effect"
import * as Metric from "effect/Metric"
import * as MetricLabel from "effect/MetricLabel"

const post = (endpoint: string, path: string, type: string, body: Uint8Array, gzip = false) =>
  Effect.async<number, Error>((resume) => {
    const payload = gzip ? zlib.gzipSync(body) : body
    const request = http.request(
      `${endpoint}${path}`,
      {
        method: "POST",
        agent: false,
        headers: { "content-type": type, ...(gzip ? { "content-encoding": "gzip" } : {}) }
      },
      (response) => {
        response.resume()
        response.on("end", () => resume(Effect.succeed(response.statusCode ?? 0)))
      }
    )
    request.on("error", (e) => resume(Effect.fail(e)))
    request.end(payload)
  })

const finishedSpans = (): ReadonlyArray<ReadableSpan> => {
  const exporter = new InMemorySpanExporter()
  const provider = new BasicTracerProvider({
    resource: resourceFromAttributes({ "service.name": "fixture" }),
    spanProcessors: [new SimpleSpanProcessor(exporter)]
  })
  const tracer = provider.getTracer("fixture")
  const parent = tracer.startSpan("parent", { attributes: { view: "7", count: 3, ratio: 0.5, ok: true } })
  const { traceId, spanId } = parent.spanContext()
  // The parent as a remote context, as a receiver sees its sender's span.
  const remote = trace.setSpanContext(ROOT_CONTEXT, { traceId, spanId, traceFlags: 1, isRemote: true })
  const child = tracer.startSpan("child", {}, remote)
  child.end()
  parent.end()
  return exporter.getFinishedSpans()
}

it.scopedLive("spans: protobuf and JSON bodies decode to the same records, gzipped or not", () =>
  Effect.gen(function* () {
    const receiver = yield* Otlp.make
    const spans = finishedSpans() as Array<ReadableSpan>
    const json = JsonTraceSerializer.serializeRequest(spans)!
    const protobuf = ProtobufTraceSerializer.serializeRequest(spans)!
    assert.strictEqual(yield* post(receiver.endpoint, "/v1/traces", "application/json", json), 200)
    const fromJson = yield* receiver.spans
    assert.strictEqual(yield* post(receiver.endpoint, "/v1/traces", "application/x-protobuf", protobuf), 200)
    assert.strictEqual(
      yield* post(receiver.endpoint, "/v1/traces", "application/x-protobuf", protobuf, true),
      200
    )
    const all = yield* receiver.spans
    assert.deepStrictEqual(yield* receiver.errors, [])
    assert.deepStrictEqual(all.slice(fromJson.length, 2 * fromJson.length), fromJson)
    assert.deepStrictEqual(all.slice(2 * fromJson.length), fromJson)

    const parent = fromJson.find((s) => s.name === "parent")!
    const child = fromJson.find((s) => s.name === "child")!
    assert.strictEqual(parent.service, "fixture")
    assert.deepStrictEqual(parent.attributes, { view: "7", count: 3, ratio: 0.5, ok: true })
    assert.isUndefined(parent.parentSpanId)
    assert.strictEqual(child.traceId, parent.traceId)
    assert.strictEqual(child.parentSpanId, parent.spanId)
    assert.match(parent.traceId, /^[0-9a-f]{32}$/)
  })
)

it.scopedLive("metrics: protobuf and JSON bodies decode to the same names, points and labels", () =>
  Effect.gen(function* () {
    const receiver = yield* Otlp.make
    const node = [MetricLabel.make("node", "n1")]
    yield* Metric.incrementBy(
      Metric.taggedWithLabels(Metric.counter("fixture_counter", { incremental: true }), node),
      5
    )
    yield* Metric.set(Metric.taggedWithLabels(Metric.gauge("fixture_gauge"), node), 2.5)
    const producer = yield* OtelMetrics.makeProducer.pipe(
      Effect.provideService(OtelResource.Resource, resourceFromAttributes({ "service.name": "fixture" }))
    )
    const { resourceMetrics } = yield* Effect.promise(() => producer.collect())
    const json = JsonMetricsSerializer.serializeRequest(resourceMetrics)!
    const protobuf = ProtobufMetricsSerializer.serializeRequest(resourceMetrics)!
    assert.strictEqual(yield* post(receiver.endpoint, "/v1/metrics", "application/json", json), 200)
    const fromJson = yield* receiver.metrics
    assert.strictEqual(yield* post(receiver.endpoint, "/v1/metrics", "application/x-protobuf", protobuf), 200)
    const all = yield* receiver.metrics
    assert.deepStrictEqual(yield* receiver.errors, [])
    assert.deepStrictEqual(all.slice(fromJson.length), fromJson)

    const counter = fromJson.find((m) => m.name === "fixture_counter")!
    assert.strictEqual(counter.service, "fixture")
    assert.deepStrictEqual(counter.points, [{ attributes: { node: "n1" }, value: 5 }])
    const gauge = fromJson.find((m) => m.name === "fixture_gauge")!
    assert.deepStrictEqual(gauge.points, [{ attributes: { node: "n1" }, value: 2.5 }])
  })
)

it.scopedLive("a body it cannot read is answered 400 and listed in errors", () =>
  Effect.gen(function* () {
    const receiver = yield* Otlp.make
    const status = yield* post(receiver.endpoint, "/v1/traces", "application/json", Buffer.from("{nope"))
    assert.strictEqual(status, 400)
    assert.strictEqual((yield* receiver.errors).length, 1)
    assert.deepStrictEqual(yield* receiver.spans, [])
  })
)
