// A process of the footprint benchmark (footprint.ts) that loads some modules, starts nothing, and
// idles: the baselines that the validators' memory is broken down against. `footprintProbe.js CASE`:
//   effect  the whole `effect` package (its index), and one trivial Effect run;
//   node    that, and @hotstuff2/node's NodeNetwork and NodeConfig (what `run` starts), not started;
//   otel    the whole `effect`, and the OpenTelemetry SDK, exporters and @effect/opentelemetry modules
//           a node with telemetry export configured uses.
// It reports `loaded` with a ProcessSample once loaded, answers "sample" requests over IPC, and exits
// when the parent goes.
import * as v8 from "node:v8"
import type { FromValidator, ProcessSample, ToValidator } from "../src/cli/protocol.js"

/** What `case` loads. Each starts with the whole `effect`, so that the differences are what is added. */
const loads: Record<string, () => Promise<unknown>> = {
  effect: async () => {
    const { Effect } = await import("effect")
    return Effect.runPromise(Effect.succeed(1))
  },
  node: async () => {
    await loads.effect!()
    return Promise.all([import("../src/NodeNetwork.js"), import("../src/NodeConfig.js")])
  },
  otel: async () => {
    await loads.effect!()
    return Promise.all([
      import("@effect/opentelemetry/Metrics"),
      import("@effect/opentelemetry/Resource"),
      import("@effect/opentelemetry/Tracer"),
      import("@opentelemetry/exporter-metrics-otlp-http"),
      import("@opentelemetry/exporter-prometheus"),
      import("@opentelemetry/exporter-trace-otlp-http"),
      import("@opentelemetry/resources"),
      import("@opentelemetry/sdk-metrics"),
      import("@opentelemetry/sdk-trace-base")
    ])
  }
}

/** Reported by a probe once its modules are loaded (not part of the validators' protocol). */
export interface Loaded {
  readonly type: "loaded"
  readonly sample: ProcessSample
}

// Built here rather than imported from src/cli/parent.ts, which would load `effect` into every probe.
const sample = (): ProcessSample => {
  const young = v8.getHeapSpaceStatistics().find((s) => s.space_name === "new_space")
  const memory = process.memoryUsage()
  const cpu = process.cpuUsage()
  return {
    at: Date.now(),
    gc: false,
    heapUsed: memory.heapUsed,
    heapTotal: memory.heapTotal,
    rss: memory.rss,
    external: memory.external,
    arrayBuffers: memory.arrayBuffers,
    youngGeneration: young?.physical_space_size ?? 0,
    cpuUserMicros: cpu.user,
    cpuSystemMicros: cpu.system,
    uptimeMillis: Math.round(process.uptime() * 1000),
    handles: process.getActiveResourcesInfo().length,
    resources: {}
  }
}

const send = (message: FromValidator | Loaded) => process.send?.(message)

const which = process.argv[2] ?? ""
const load = loads[which]
if (load === undefined) {
  process.stderr.write(`footprintProbe: expected one of ${Object.keys(loads).join(", ")}, got "${which}"\n`)
  process.exit(2)
}
process.on("message", (m: ToValidator) => {
  if (m.type === "sample") send({ type: "sample", sample: sample() })
})
process.on("disconnect", () => process.exit(0))
await load()
send({ type: "loaded", sample: sample() })
