// Simulation at scale (issue 13): what one validator and one connection cost in a TestCluster on the
// simulated network under TestClock, and how fast idle heartbeats run there.
//
// For each size N (argv, default 100): a cluster of N validators that each know only themselves (no
// connections: the per-node cost), then a full-mesh cluster of N (every validator knows every other),
// stepped 10 ms of TestClock at a time (as `waitSimulated` does) until every node has N - 1 connected
// peers. Reported per size, one JSON line on stdout (progress on stderr):
// - `meshWallMs`: wall time from `TestCluster.make` to the full mesh; `meshSimulatedMs`: TestClock time.
// - `heapIdleBytes` / `heapMeshBytes`: heap used after a forced full GC, over the baseline before the
//   cluster, for the isolated cluster and for the meshed one.
// - `bytesPerNode` = heapIdle / N; `bytesPerConnection` = (heapMesh - heapIdle) / (N (N - 1) / 2), a
//   connection being both of its ends (two transports, two peer managers, one simulated link).
// - `meshCpuMs`, `heartbeatCpuMs`: the same spans in CPU time of this process (user + system), less
//   at the mercy of a shared machine's load than wall time.
// - `heartbeatWallMs` for 10 simulated seconds (SCALE_HEARTBEAT_SECONDS) of idle heartbeats in 10 ms steps, and `heartbeatRatio`
//   (simulated / wall: above 1 is faster than real time).
// With two sizes or more, a final `fit` line solves heap = a N + b C (C = N (N - 1) / 2) from the first
// and last size, as a cross-check of the per-node and per-connection figures.
//
// Run from packages/node: `npm run bench:scale -- 100 300`, i.e.
// `node --expose-gc --import tsx --conditions=@hotstuff2/source bench/scale.ts 100 300`.
// Env: SCALE_HEARTBEAT_SECONDS (default 10) is the idle heartbeat phase; SCALE_IDLE=0 skips the
// isolated cluster; SCALE_HEAP_SNAPSHOT=1 writes a heap snapshot of the
// isolated and of the meshed cluster (`scale-N-isolated.heapsnapshot`, `scale-N.heapsnapshot` in the
// working directory); SCALE_CPU_PROFILE=1 profiles the
// heartbeat phase (`scale-N-heartbeats.cpuprofile`).
import * as fs from "node:fs"
import * as inspector from "node:inspector"
import * as os from "node:os"
import * as v8 from "node:v8"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Logger from "effect/Logger"
import * as LogLevel from "effect/LogLevel"
import * as Scope from "effect/Scope"
import * as TestClock from "effect/TestClock"
import * as TestContext from "effect/TestContext"
import { TestCluster } from "../src/index.js"

const sizes = process.argv
  .slice(2)
  .map(Number)
  .filter((n) => Number.isInteger(n) && n > 1)
if (sizes.length === 0) sizes.push(100)
const measureIdle = process.env.SCALE_IDLE !== "0"
const snapshot = process.env.SCALE_HEAP_SNAPSHOT === "1"
const cpuProfile = process.env.SCALE_CPU_PROFILE === "1"
const MESH_WITHIN_MS = 120_000
const HEARTBEAT_MS = 1000 * Number(process.env.SCALE_HEARTBEAT_SECONDS ?? 10)
const STEP_MS = 10

const log = (line: string) => process.stderr.write(`scale: ${line}\n`)
const emit = (record: Record<string, unknown>) => process.stdout.write(`${JSON.stringify(record)}\n`)

const gc = (globalThis as { gc?: () => void }).gc
if (gc === undefined) throw new Error("run with node --expose-gc")
/** CPU time of this process (user + system), in ms: less at the mercy of other load than wall time. */
const cpuMs = (): number => {
  const { user, system } = process.cpuUsage()
  return (user + system) / 1000
}

const heapAfterGc = (): number => {
  for (let i = 0; i < 3; i++) gc()
  return process.memoryUsage().heapUsed
}

const session = cpuProfile ? new inspector.Session() : undefined
session?.connect()
const post = (method: string, params?: object) =>
  new Promise<unknown>((resolve, reject) =>
    session!.post(method, params, (error, result) => (error ? reject(error) : resolve(result)))
  )
const profileStart = Effect.promise(async () => {
  if (session === undefined) return
  await post("Profiler.enable")
  await post("Profiler.start")
})
const profileStop = (file: string) =>
  Effect.promise(async () => {
    if (session === undefined) return
    const { profile } = (await post("Profiler.stop")) as { profile: unknown }
    fs.writeFileSync(file, JSON.stringify(profile))
    log(`cpu profile: ${file}`)
  })

const connectedEverywhere = (cluster: TestCluster.TestCluster, want: number) =>
  Effect.gen(function* () {
    for (let i = 0; i < cluster.validators.length; i++) {
      const peers = yield* cluster.node(i).peers
      let n = 0
      for (const p of peers) if (p.state === "connected") n++
      if (n < want) return false
    }
    return true
  })

/** Steps the TestClock until `condition` holds (checked every `every` ms of simulated time). */
const stepUntil = (condition: Effect.Effect<boolean>, every: number, within: number) =>
  Effect.gen(function* () {
    for (let t = 0; t <= within; t += STEP_MS) {
      if (t % every === 0 && (yield* condition)) return t
      yield* TestClock.adjust(`${STEP_MS} millis`)
    }
    return yield* Effect.dieMessage(`no full mesh within ${within} ms of simulated time`)
  })

/** Runs `f` on a cluster of `size` in a scope of its own, closed (and collected) afterwards. */
const withCluster = <A>(
  options: TestCluster.TestClusterOptions,
  f: (cluster: TestCluster.TestCluster, startedAt: number, startedCpu: number) => Effect.Effect<A>
) =>
  Effect.gen(function* () {
    const scope = yield* Scope.make()
    const started = performance.now()
    const startedCpu = cpuMs()
    const cluster = yield* TestCluster.make(options).pipe(Scope.extend(scope), Effect.orDie)
    const result = yield* f(cluster, started, startedCpu)
    yield* Scope.close(scope, Exit.void)
    return result
  })

const measure = (size: number) =>
  Effect.gen(function* () {
    const baseline = heapAfterGc()
    let heapIdle: number | undefined
    if (measureIdle) {
      heapIdle = yield* withCluster({ size, seed: 13, members: (i) => [i] }, () =>
        Effect.gen(function* () {
          yield* TestClock.adjust("1 second")
          const heap = heapAfterGc() - baseline
          if (snapshot) log(`heap snapshot: ${v8.writeHeapSnapshot(`scale-${size}-isolated.heapsnapshot`)}`)
          return heap
        })
      )
      log(`N=${size} isolated: ${(heapIdle / 2 ** 20).toFixed(1)} MiB`)
    }
    const base2 = heapAfterGc()
    const result = yield* withCluster({ size, seed: 13 }, (cluster, started, startedCpu) =>
      Effect.gen(function* () {
        const built = performance.now()
        log(`N=${size} built in ${Math.round(built - started)} ms`)
        const meshSimulatedMs = yield* stepUntil(connectedEverywhere(cluster, size - 1), 100, MESH_WITHIN_MS)
        const meshed = performance.now()
        const meshCpuMs = Math.round(cpuMs() - startedCpu)
        log(`N=${size} meshed after ${meshSimulatedMs} simulated ms, ${Math.round(meshed - started)} ms wall`)
        const heapMesh = heapAfterGc() - base2
        // Emitted now too: the heartbeat phase of a large cluster can take a while.
        emit({
          bench: "scale",
          phase: "meshed",
          nodes: size,
          meshWallMs: Math.round(meshed - started),
          heapMeshBytes: heapMesh
        })
        if (snapshot) log(`heap snapshot: ${v8.writeHeapSnapshot(`scale-${size}.heapsnapshot`)}`)
        yield* profileStart
        const hbStart = performance.now()
        const hbCpu = cpuMs()
        for (let t = 0; t < HEARTBEAT_MS; t += STEP_MS) yield* TestClock.adjust(`${STEP_MS} millis`)
        const heartbeatWallMs = performance.now() - hbStart
        const heartbeatCpuMs = cpuMs() - hbCpu
        yield* profileStop(`scale-${size}-heartbeats.cpuprofile`)
        const stillMeshed = yield* connectedEverywhere(cluster, size - 1)
        log(
          `N=${size} ${HEARTBEAT_MS / 1000} simulated s of heartbeats in ${Math.round(heartbeatWallMs)} ms wall`
        )
        return {
          buildWallMs: Math.round(built - started),
          meshWallMs: Math.round(meshed - started),
          meshCpuMs,
          meshSimulatedMs,
          heapMesh,
          heartbeatWallMs: Math.round(heartbeatWallMs),
          heartbeatRatio: Math.round((HEARTBEAT_MS / heartbeatWallMs) * 100) / 100,
          heartbeatCpuMs: Math.round(heartbeatCpuMs),
          heartbeatCpuRatio: Math.round((HEARTBEAT_MS / heartbeatCpuMs) * 100) / 100,
          stillMeshed
        }
      })
    )
    const connections = (size * (size - 1)) / 2
    const record = {
      bench: "scale",
      nodes: size,
      connections,
      buildWallMs: result.buildWallMs,
      meshWallMs: result.meshWallMs,
      meshCpuMs: result.meshCpuMs,
      meshSimulatedMs: result.meshSimulatedMs,
      heapIdleBytes: heapIdle,
      heapMeshBytes: result.heapMesh,
      heapMeshMiB: Math.round((result.heapMesh / 2 ** 20) * 10) / 10,
      bytesPerNode: heapIdle === undefined ? undefined : Math.round(heapIdle / size),
      bytesPerConnection:
        heapIdle === undefined ? undefined : Math.round((result.heapMesh - heapIdle) / connections),
      heartbeatWallMs: result.heartbeatWallMs,
      heartbeatRatio: result.heartbeatRatio,
      heartbeatCpuMs: result.heartbeatCpuMs,
      heartbeatCpuRatio: result.heartbeatCpuRatio,
      stillMeshedAfterHeartbeats: result.stillMeshed,
      node: process.version,
      cpus: os.cpus().length,
      loadavg: os.loadavg().map((l) => Math.round(l * 100) / 100)
    }
    emit(record)
    return record
  })

const program = Effect.gen(function* () {
  const records = []
  for (const size of sizes) records.push(yield* measure(size))
  if (records.length >= 2) {
    const a = records[0]!
    const b = records.at(-1)!
    // heap = x N + y C, from two sizes.
    const det = a.nodes * b.connections - b.nodes * a.connections
    const x = (a.heapMeshBytes * b.connections - b.heapMeshBytes * a.connections) / det
    const y = (a.nodes * b.heapMeshBytes - b.nodes * a.heapMeshBytes) / det
    emit({
      bench: "scale",
      fit: `${a.nodes},${b.nodes}`,
      bytesPerNode: Math.round(x),
      bytesPerConnection: Math.round(y)
    })
  }
})

program
  .pipe(
    Effect.provide(TestContext.TestContext),
    Effect.provide(Logger.replace(Logger.defaultLogger, Logger.withConsoleError(Logger.logfmtLogger))),
    Logger.withMinimumLogLevel(LogLevel.Warning),
    Effect.runPromise
  )
  .then(
    () => process.exit(0),
    (error) => {
      process.stderr.write(`scale: ${error}\n`)
      process.exit(1)
    }
  )
