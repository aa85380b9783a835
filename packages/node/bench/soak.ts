// Soak: a devnet (4 validator processes over TLS on 127.0.0.1, each running NodeNetwork and the
// consensus traffic driver, exactly as `hotstuff2-net devnet` starts them) for SOAK_MINUTES, asking
// every validator once a minute for its memory and handles (`ProcessSample`: heap used after a forced
// full GC, since the validators run with --expose-gc; RSS; active handles, requests and timers by
// kind), with its driver's counters beside them so that a sample shows traffic was flowing.
//
// Output: one JSON line per validator per sample (`"soak": "sample"`), then per validator the growth
// after the warm-up (`"soak": "growth"`: the samples of the first SOAK_WARMUP_SECONDS are left out;
// delta from the first sample after it to the last, and the least-squares slope per minute over
// those samples), then one `"soak": "summary"` line. Progress on stderr. Nothing is asserted: a
// validator that fails or exits makes the run fail (exit 1); growth is for the reader (goal: flat).
//
// Flags and env: --minutes N or SOAK_MINUTES (default 10), SOAK_SAMPLE_SECONDS (60),
// SOAK_WARMUP_SECONDS (60), SOAK_VALIDATORS (4), SOAK_TRANSPORT (tls | tcp), SOAK_PAYLOAD (bytes,
// 1024), SOAK_VIEW_TIMEOUT_MS (1000), SOAK_MIN_VIEW_TIME_MS (0: the devnet's defaults, as fast as
// consensus goes).
//
// Run: `npm run soak` (root) or `cd packages/node && npm run soak` (`tsc -b`, then node dist/bench/soak.js).
import { type ChildProcess, fork } from "node:child_process"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import { Bench } from "@hotstuff2/testing"
import { Identity } from "@hotstuff2/wire"
import * as Effect from "effect/Effect"
import { configsFor } from "../src/cli/devnet.js"
import type {
  FromValidator,
  ProcessSample,
  Snapshot,
  ToValidator,
  ValidatorSetup
} from "../src/cli/protocol.js"
import { reservePorts } from "../src/internal/ports.js"

Bench.resultsOnStdout()

// ---- parameters ----

const flag = (name: string): string | undefined => {
  const i = process.argv.indexOf(name)
  return i >= 0 ? process.argv[i + 1] : undefined
}
const numberOf = (text: string | undefined, fallback: number, name: string): number => {
  if (text === undefined || text === "") return fallback
  const n = Number(text)
  if (!Number.isFinite(n) || n < 0) throw new Error(`${name}: expected a number >= 0, got "${text}"`)
  return n
}

const MINUTES = numberOf(flag("--minutes") ?? process.env.SOAK_MINUTES, 10, "SOAK_MINUTES")
const SAMPLE_SECONDS = numberOf(process.env.SOAK_SAMPLE_SECONDS, 60, "SOAK_SAMPLE_SECONDS") || 60
const WARMUP_SECONDS = numberOf(process.env.SOAK_WARMUP_SECONDS, 60, "SOAK_WARMUP_SECONDS")
const VALIDATORS = numberOf(process.env.SOAK_VALIDATORS, 4, "SOAK_VALIDATORS")
const TRANSPORT = process.env.SOAK_TRANSPORT === "tcp" ? "tcp" : "tls"
const PAYLOAD_BYTES = numberOf(process.env.SOAK_PAYLOAD, 1024, "SOAK_PAYLOAD")
const VIEW_TIMEOUT_MS = numberOf(process.env.SOAK_VIEW_TIMEOUT_MS, 1000, "SOAK_VIEW_TIMEOUT_MS")
const MIN_VIEW_TIME_MS = numberOf(process.env.SOAK_MIN_VIEW_TIME_MS, 0, "SOAK_MIN_VIEW_TIME_MS")
const STATS_INTERVAL_MS = 1000
const START_TIMEOUT_MS = 60_000
const SAMPLE_TIMEOUT_MS = 30_000
const STOP_TIMEOUT_MS = 15_000
const NETWORK_ID = "hotstuff2-soak"

const MiB = 1024 * 1024
const log = (line: string) => process.stderr.write(`soak: ${line}\n`)
const emit = (record: Record<string, unknown>) => process.stdout.write(`${JSON.stringify(record)}\n`)

// ---- validators ----

/** validator.ts beside devnet.ts: compiled (dist/bench -> dist/src) or the sources under tsx. */
const validatorEntry = (): string => {
  const here = fileURLToPath(import.meta.url)
  return path.join(path.dirname(here), "..", "src", "cli", `validator${path.extname(here)}`)
}

interface Validator {
  readonly index: number
  readonly process: ChildProcess
  readonly ready: Promise<void>
  readonly exited: Promise<void>
  latest: Snapshot | undefined
  pendingSample: ((sample: ProcessSample) => void) | undefined
  exit: { code: number | null; signal: string | null } | undefined
  output: Array<string>
}

const failures: Array<string> = []
let stopping = false

const spawn = (index: number, setup: ValidatorSetup): Validator => {
  const child = fork(validatorEntry(), [], {
    execArgv: [...process.execArgv, "--expose-gc"],
    stdio: ["ignore", "pipe", "pipe", "ipc"],
    serialization: "json"
  })
  let readyResolve!: () => void
  let readyReject!: (e: Error) => void
  let exitedResolve!: () => void
  const v: Validator = {
    index,
    process: child,
    ready: new Promise<void>((resolve, reject) => {
      readyResolve = resolve
      readyReject = reject
    }),
    exited: new Promise<void>((resolve) => {
      exitedResolve = resolve
    }),
    latest: undefined,
    pendingSample: undefined,
    exit: undefined,
    output: []
  }
  v.ready.catch(() => {})
  const keep = (chunk: Buffer) => {
    for (const line of chunk.toString("utf8").split("\n")) {
      if (line.trim() === "") continue
      v.output.push(line)
      if (v.output.length > 40) v.output.shift()
    }
  }
  child.stdout?.on("data", keep)
  child.stderr?.on("data", keep)
  child.on("message", (m: FromValidator) => {
    switch (m.type) {
      case "ready":
        readyResolve()
        return
      case "stats":
        v.latest = m.snapshot
        return
      case "sample": {
        const pending = v.pendingSample
        v.pendingSample = undefined
        pending?.(m.sample)
        return
      }
      case "failed":
        failures.push(`validator ${index}: ${m.message}`)
        readyReject(new Error(m.message))
        return
    }
  })
  child.on("exit", (code, signal) => {
    v.exit = { code, signal }
    if (!stopping) failures.push(`validator ${index} exited early (${signal ?? `code ${code}`})`)
    readyReject(new Error(`validator ${index} exited`))
    exitedResolve()
  })
  child.send({ type: "start", setup } satisfies ToValidator)
  return v
}

const withTimeout = <A>(promise: Promise<A>, ms: number, what: string): Promise<A> =>
  new Promise<A>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${what}: no answer within ${ms} ms`)), ms)
    promise.then(
      (a) => {
        clearTimeout(timer)
        resolve(a)
      },
      (e) => {
        clearTimeout(timer)
        reject(e)
      }
    )
  })

const sample = (v: Validator): Promise<ProcessSample> =>
  withTimeout(
    new Promise<ProcessSample>((resolve) => {
      v.pendingSample = resolve
      v.process.send({ type: "sample" } satisfies ToValidator)
    }),
    SAMPLE_TIMEOUT_MS,
    `validator ${v.index} sample`
  )

const stop = async (v: Validator): Promise<void> => {
  if (v.exit !== undefined) return
  try {
    if (v.process.connected) v.process.send({ type: "stop" } satisfies ToValidator)
  } catch {
    // gone already: its exit event follows
  }
  const exited = await withTimeout(v.exited, STOP_TIMEOUT_MS, `validator ${v.index} stop`).then(
    () => true,
    () => false
  )
  if (!exited) {
    failures.push(`validator ${v.index} did not exit within ${STOP_TIMEOUT_MS} ms; killed`)
    v.process.kill("SIGKILL")
    await withTimeout(v.exited, 2000, "kill").catch(() => {})
  }
}

// ---- growth ----

interface Point {
  readonly t: number
  readonly sample: ProcessSample
}

/** Least-squares slope of y over t (seconds), per minute. */
const slopePerMinute = (points: ReadonlyArray<{ t: number; y: number }>): number => {
  if (points.length < 2) return 0
  const n = points.length
  const mt = points.reduce((a, p) => a + p.t, 0) / n
  const my = points.reduce((a, p) => a + p.y, 0) / n
  let num = 0
  let den = 0
  for (const p of points) {
    num += (p.t - mt) * (p.y - my)
    den += (p.t - mt) ** 2
  }
  return den === 0 ? 0 : (num / den) * 60
}

const growth = (points: ReadonlyArray<Point>, field: "heapUsed" | "rss" | "arrayBuffers" | "handles") => {
  const ys = points.map((p) => ({ t: p.t, y: p.sample[field] }))
  const first = ys[0]?.y ?? 0
  const last = ys[ys.length - 1]?.y ?? 0
  return {
    first,
    last,
    delta: last - first,
    min: Math.min(...ys.map((p) => p.y)),
    max: Math.max(...ys.map((p) => p.y)),
    perMinute: Math.round(slopePerMinute(ys))
  }
}

// ---- run ----

const main = async () => {
  const machine = Bench.machine()
  log(
    `${VALIDATORS} validators over ${TRANSPORT}, ${MINUTES} min, a sample every ${SAMPLE_SECONDS} s, ` +
      `warm-up ${WARMUP_SECONDS} s excluded from growth (${machine.cpu}, ${machine.cores} cores, Node ${machine.node})`
  )
  const ports = await Effect.runPromise(reservePorts(VALIDATORS))
  const identities = await Effect.runPromise(Effect.forEach(ports, () => Identity.generate))
  const configs = configsFor(identities, ports, TRANSPORT).map((c) => ({ ...c, networkId: NETWORK_ID }))
  const validators = configs.map((config, index) =>
    spawn(index, {
      index,
      config,
      payloadBytes: PAYLOAD_BYTES,
      viewTimeoutMillis: VIEW_TIMEOUT_MS,
      minViewTimeMillis: MIN_VIEW_TIME_MS,
      statsIntervalMillis: STATS_INTERVAL_MS
    })
  )
  const stopAll = async () => {
    stopping = true
    await Promise.all(validators.map(stop))
  }
  const onSignal = () => {
    failures.push("interrupted")
    void stopAll().then(() => process.exit(130))
  }
  process.on("SIGINT", onSignal)
  process.on("SIGTERM", onSignal)

  const series: Array<Array<Point>> = validators.map(() => [])
  let startedAt = 0
  try {
    await withTimeout(Promise.all(validators.map((v) => v.ready)), START_TIMEOUT_MS, "start")
    startedAt = Date.now()
    log(`all ${VALIDATORS} validators up on 127.0.0.1:${ports.join(",")}`)
    const total = MINUTES * 60
    for (let k = 0; k * SAMPLE_SECONDS <= total + 1e-9 && failures.length === 0; k++) {
      const due = startedAt + k * SAMPLE_SECONDS * 1000
      const wait = due - Date.now()
      if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait))
      if (failures.length > 0) break
      const t = Math.round((Date.now() - startedAt) / 1000)
      const samples = await Promise.all(validators.map(sample))
      samples.forEach((s, i) => {
        series[i]!.push({ t, sample: s })
        const stats = validators[i]!.latest
        emit({
          soak: "sample",
          t,
          validator: i,
          heapUsed: s.heapUsed,
          heapTotal: s.heapTotal,
          rss: s.rss,
          external: s.external,
          arrayBuffers: s.arrayBuffers,
          gc: s.gc,
          handles: s.handles,
          resources: s.resources,
          view: stats?.view ?? null,
          proposalsSent: stats?.proposalsSent ?? null,
          votesReceived: stats?.votesReceived ?? null,
          peersConnected: stats?.peersConnected ?? null,
          bytesIn: stats?.bytesIn ?? null,
          bytesOut: stats?.bytesOut ?? null
        })
      })
      log(
        `t=${t}s ` +
          samples
            .map(
              (s, i) =>
                `v${i} heap ${(s.heapUsed / MiB).toFixed(1)} MiB rss ${(s.rss / MiB).toFixed(0)} MiB ` +
                `handles ${s.handles} view ${validators[i]!.latest?.view ?? "-"}`
            )
            .join(" | ")
      )
    }
  } catch (e) {
    failures.push((e as Error).message)
  }
  const seconds = startedAt === 0 ? 0 : (Date.now() - startedAt) / 1000
  const finalStats = validators.map((v) => v.latest)
  await stopAll()
  process.off("SIGINT", onSignal)
  process.off("SIGTERM", onSignal)

  const growthRecords = series.map((points, validator) => {
    const after = points.filter((p) => p.t >= WARMUP_SECONDS - 1)
    return {
      soak: "growth",
      validator,
      from: after[0]?.t ?? null,
      to: after[after.length - 1]?.t ?? null,
      samples: after.length,
      heapUsed: growth(after, "heapUsed"),
      rss: growth(after, "rss"),
      arrayBuffers: growth(after, "arrayBuffers"),
      handles: growth(after, "handles"),
      view: finalStats[validator]?.view ?? null
    }
  })
  for (const record of growthRecords) emit(record)
  const views = Math.max(0, ...finalStats.map((s) => s?.view ?? 0))
  emit({
    soak: "summary",
    ok: failures.length === 0,
    validators: VALIDATORS,
    transport: TRANSPORT,
    payloadBytes: PAYLOAD_BYTES,
    minViewTimeMillis: MIN_VIEW_TIME_MS,
    minutes: MINUTES,
    sampleSeconds: SAMPLE_SECONDS,
    warmupSeconds: WARMUP_SECONDS,
    seconds,
    views,
    viewsPerSecond: seconds > 0 ? views / seconds : 0,
    heapUsedGrowthPerMinute: growthRecords.map((g) => g.heapUsed.perMinute),
    rssGrowthPerMinute: growthRecords.map((g) => g.rss.perMinute),
    handlesDelta: growthRecords.map((g) => g.handles.delta),
    failures,
    machine
  })
  if (failures.length > 0) {
    for (const v of validators) for (const line of v.output) log(`[v${v.index}] ${line}`)
    process.exitCode = 1
  }
}

main().catch((e) => {
  log(`failed: ${(e as Error)?.stack ?? e}`)
  process.exitCode = 1
})
