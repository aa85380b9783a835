// A validator process and the parent that started it with an IPC channel (`devnet`, the soak and
// footprint benchmarks): messages to the parent, and answers to its "sample" and "status" requests.
// Without an IPC channel (a validator started from a shell) nothing is sent and nothing is asked.
import * as v8 from "node:v8"
import * as Effect from "effect/Effect"
import type { FromValidator, ProcessSample, Snapshot, ToValidator } from "./protocol.js"

/** Sends to the parent; no channel, or a closed one (the parent is gone), is not an error. */
export const tell = (message: FromValidator): Effect.Effect<void> =>
  Effect.async<void>((resume) => {
    if (process.send === undefined || !process.connected) return resume(Effect.void)
    try {
      process.send(message, undefined, {}, () => resume(Effect.void))
    } catch {
      resume(Effect.void)
    }
  })

/** Resident bytes of V8's new space. */
export const youngGeneration = (): number =>
  v8.getHeapSpaceStatistics().find((s) => s.space_name === "new_space")?.physical_space_size ?? 0

/** Memory, CPU and handles now; after a full collection when the process runs with --expose-gc. */
export const processSample = (): ProcessSample => {
  const gc = (globalThis as { gc?: () => void }).gc
  gc?.()
  const memory = process.memoryUsage()
  const cpu = process.cpuUsage()
  const active = process.getActiveResourcesInfo()
  const resources: Record<string, number> = {}
  for (const kind of active) resources[kind] = (resources[kind] ?? 0) + 1
  return {
    at: Date.now(),
    gc: gc !== undefined,
    heapUsed: memory.heapUsed,
    heapTotal: memory.heapTotal,
    rss: memory.rss,
    external: memory.external,
    arrayBuffers: memory.arrayBuffers,
    youngGeneration: youngGeneration(),
    cpuUserMicros: cpu.user,
    cpuSystemMicros: cpu.system,
    uptimeMillis: Math.round(process.uptime() * 1000),
    handles: active.length,
    resources
  }
}

/**
 * While the scope is open, answers each "sample" request with a `ProcessSample` and each "status"
 * request with a `stats` message carrying `status`'s snapshot.
 */
export const answerRequests = (status: Effect.Effect<Snapshot>) =>
  Effect.acquireRelease(
    Effect.sync(() => {
      const onMessage = (m: ToValidator) => {
        if (m.type === "sample") Effect.runFork(tell({ type: "sample", sample: processSample() }))
        else if (m.type === "status")
          Effect.runFork(Effect.flatMap(status, (snapshot) => tell({ type: "stats", snapshot })))
      }
      process.on("message", onMessage)
      return onMessage
    }),
    (onMessage) => Effect.sync(() => process.off("message", onMessage))
  )
