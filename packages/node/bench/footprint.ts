// Footprint: what an idle validator costs in memory and start-up CPU. Four validators over TLS on
// 127.0.0.1, each a `hotstuff2-net run --config F` process as a user starts it (no --drive, no
// telemetry configured; configs as `devnet` writes them), started together; once every one has its 3
// peers connected they idle FOOTPRINT_IDLE_S seconds, and each is asked for `process.memoryUsage()`
// over the IPC channel `run` answers on when it has one. Beside them, in the same run and idling as
// long, the baselines the memory is broken down against: a bare `node -e` process; a process that
// loads the whole `effect` and runs a trivial Effect; one that also loads @hotstuff2/node's
// NodeNetwork (what `run` starts) without starting it; one that loads `effect` and the
// OpenTelemetry SDK, exporters and
// @effect/opentelemetry (footprintProbe.ts); and a fifth validator alone (a validator set of one:
// started, no peers).
//
// Output (stdout, one JSON line each): per validator (`case: "validator"`): rss, heapUsed, heapTotal,
// external, arrayBuffers (bytes and MiB) after the idle period; start-up CPU (user + system) and wall
// time until its network was up (it first answered) and until its 3 peers were connected; then the
// median over the validators, each baseline, and `case: "breakdown"`: the median validator's RSS
// split into node itself, the Effect library, our code and what it loads, the CLI and a started
// network, the 3 peers' connections and buffers (each without V8's young generation, which is the
// last term), plus what the OTel SDK would add if loaded.
// Progress on stderr.
//
// Env: FOOTPRINT_IDLE_S (30; 0 for a quick check), FOOTPRINT_TRANSPORT (tls | tcp),
// FOOTPRINT_NODE_OPTIONS (node flags for every child, e.g. "--max-semi-space-size=1", to measure
// a documented option against the defaults).
//
// Run: `cd packages/node && npm run bench:footprint` (`tsc -b`, then node dist/bench/footprint.js).
import { type ChildProcess, execFileSync, spawn } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import { Bench } from "@hotstuff2/testing"
import { Identity } from "@hotstuff2/wire"
import * as Effect from "effect/Effect"
import { configsFor } from "../src/cli/devnet.js"
import type { FromValidator, ProcessSample, Snapshot, ToValidator } from "../src/cli/protocol.js"
import { reservePorts } from "../src/internal/ports.js"
import type { Loaded } from "./footprintProbe.js"

Bench.resultsOnStdout()

// ---- parameters ----

const numberOf = (name: string, fallback: number): number => {
  const text = process.env[name]
  if (text === undefined || text === "") return fallback
  const n = Number(text)
  if (!Number.isFinite(n) || n < 0) throw new Error(`${name}: expected a number >= 0, got "${text}"`)
  return n
}

const IDLE_S = numberOf("FOOTPRINT_IDLE_S", 30)
const TRANSPORT = process.env.FOOTPRINT_TRANSPORT === "tcp" ? "tcp" : "tls"
const NODE_OPTIONS = (process.env.FOOTPRINT_NODE_OPTIONS ?? "").split(" ").filter((a) => a.length > 0)
const VALIDATORS = 4
const PEERS = VALIDATORS - 1
const POLL_MS = 100
const START_TIMEOUT_MS = 60_000
const ANSWER_TIMEOUT_MS = 10_000
const STOP_TIMEOUT_MS = 10_000

const MiB = 1024 * 1024
const mib = (bytes: number) => Bench.round(bytes / MiB, 1)
const log = (line: string) => process.stderr.write(`footprint: ${line}\n`)

// ---- children ----

const here = fileURLToPath(import.meta.url)
const fromSource = here.endsWith(".ts")
const extension = fromSource ? ".ts" : ".js"
/** The CLI entry (dist/src/cli/main.js compiled; the sources under tsx) and the probe beside us. */
const cliEntry = path.join(path.dirname(here), "..", "src", "cli", `main${extension}`)
const probeEntry = path.join(path.dirname(here), `footprintProbe${extension}`)
const loader = fromSource ? ["--import", "tsx", "--conditions=@hotstuff2/source"] : []

/** A bare process: answers "sample" as the others do, loads nothing. */
const BARE = `process.on("message", (m) => {
  if (m.type !== "sample") return
  const u = process.memoryUsage(), c = process.cpuUsage()
  const young = require("node:v8").getHeapSpaceStatistics().find((s) => s.space_name === "new_space")
  process.send({ type: "sample", sample: { at: Date.now(), gc: false, heapUsed: u.heapUsed, heapTotal: u.heapTotal,
    rss: u.rss, external: u.external, arrayBuffers: u.arrayBuffers, youngGeneration: young.physical_space_size,
    cpuUserMicros: c.user, cpuSystemMicros: c.system,
    uptimeMillis: Math.round(process.uptime() * 1000), handles: 0, resources: {} } })
})
process.on("disconnect", () => process.exit(0))
process.send({ type: "loaded" })`

type Message = FromValidator | Loaded | { readonly type: "loaded" }

class Child {
  readonly started = Bench.now()
  readonly output: Array<string> = []
  exit: string | undefined
  private readonly waiters = new Map<string, Array<(m: Message | Error) => void>>()
  readonly exited: Promise<void>

  constructor(
    readonly name: string,
    readonly process: ChildProcess
  ) {
    const keep = (chunk: Buffer) => {
      for (const line of chunk.toString("utf8").split("\n")) {
        if (line.trim() === "") continue
        this.output.push(line.length > 300 ? `${line.slice(0, 300)}...` : line)
        if (this.output.length > 30) this.output.shift()
      }
    }
    process.stdout?.on("data", keep)
    process.stderr?.on("data", keep)
    process.on("message", (m: Message) => {
      const waiting = this.waiters.get(m.type)
      const next = waiting?.shift()
      next?.(m)
    })
    this.exited = new Promise((resolve) => {
      process.once("exit", (code, signal) => {
        this.exit = signal ?? `code ${code}`
        const error = new Error(`${name} exited (${this.exit})\n${this.output.join("\n")}`)
        for (const waiting of this.waiters.values()) for (const w of waiting.splice(0)) w(error)
        resolve()
      })
    })
  }

  /** The next message of `type`, after sending `request` if given. */
  next<T extends Message["type"]>(type: T, request?: ToValidator, timeoutMs = ANSWER_TIMEOUT_MS) {
    return new Promise<Extract<Message, { type: T }>>((resolve, reject) => {
      if (this.exit !== undefined) return reject(new Error(`${this.name} exited (${this.exit})`))
      const timer = setTimeout(() => {
        const waiting = this.waiters.get(type) ?? []
        const i = waiting.indexOf(settle)
        if (i >= 0) waiting.splice(i, 1)
        reject(new Error(`${this.name}: no '${type}' within ${timeoutMs} ms\n${this.output.join("\n")}`))
      }, timeoutMs)
      const settle = (m: Message | Error) => {
        clearTimeout(timer)
        if (m instanceof Error) reject(m)
        else resolve(m as Extract<Message, { type: T }>)
      }
      const waiting = this.waiters.get(type) ?? []
      waiting.push(settle)
      this.waiters.set(type, waiting)
      if (request !== undefined) this.process.send(request)
    })
  }

  sample(): Promise<ProcessSample> {
    return this.next("sample", { type: "sample" }).then((m) => m.sample)
  }

  status(timeoutMs = ANSWER_TIMEOUT_MS): Promise<Snapshot> {
    return this.next("stats", { type: "status" }, timeoutMs).then((m) => m.snapshot)
  }

  /** Milliseconds since the process was spawned. */
  elapsedMillis(): number {
    return Number(Bench.now() - this.started) / 1e6
  }

  /** SIGTERM (a validator closes its network) or a closed channel (a probe exits); killed after a while. */
  async stop(): Promise<void> {
    if (this.exit !== undefined) return
    if (this.name.startsWith("validator")) this.process.kill("SIGTERM")
    else if (this.process.connected) this.process.disconnect()
    const timer = setTimeout(() => this.process.kill("SIGKILL"), STOP_TIMEOUT_MS)
    await this.exited
    clearTimeout(timer)
  }
}

const children = new Set<Child>()
process.once("exit", () => {
  for (const c of children) if (c.exit === undefined) c.process.kill("SIGKILL")
})
for (const signal of ["SIGINT", "SIGTERM"] as const) {
  process.once(signal, () => {
    log(`${signal}: stopping`)
    process.exit(130)
  })
}

const start = (name: string, args: ReadonlyArray<string>): Child => {
  const child = new Child(
    name,
    spawn(process.execPath, [...NODE_OPTIONS, ...args], {
      env: { ...process.env, NO_COLOR: "1" },
      stdio: ["ignore", "pipe", "pipe", "ipc"],
      serialization: "json"
    })
  )
  children.add(child)
  return child
}

/** Asks for `status` every POLL_MS until `done` holds; the snapshot and the time since spawn. */
const until = async (child: Child, done: (s: Snapshot) => boolean) => {
  for (;;) {
    if (child.elapsedMillis() > START_TIMEOUT_MS)
      throw new Error(`${child.name}: not ready within ${START_TIMEOUT_MS} ms\n${child.output.join("\n")}`)
    // `run` answers once its network is up; before that nobody listens and the request is dropped.
    const snapshot = await child.status(POLL_MS * 3).catch((e: Error) => {
      if (child.exit !== undefined) throw e
      return undefined
    })
    if (snapshot !== undefined && done(snapshot)) return { snapshot, wallMillis: child.elapsedMillis() }
    await new Promise((resolve) => setTimeout(resolve, POLL_MS))
  }
}

/** CPU time at start-up in milliseconds, user + system, from a sample. */
const cpuMillis = (s: ProcessSample) => Bench.round((s.cpuUserMicros + s.cpuSystemMicros) / 1000, 0)

/** A validator: up (answers), then with its peers; CPU and wall time at both. */
const startValidator = async (child: Child, peers: number) => {
  const up = await until(child, () => true)
  const upSample = await child.sample()
  const connected = peers === 0 ? up : await until(child, (s) => s.peersConnected >= peers)
  const connectedSample = peers === 0 ? upSample : await child.sample()
  return {
    upWallMs: Bench.round(up.wallMillis, 0),
    upCpuMs: cpuMillis(upSample),
    peersWallMs: Bench.round(connected.wallMillis, 0),
    peersCpuMs: cpuMillis(connectedSample)
  }
}

const memory = (s: ProcessSample) => ({
  rss: s.rss,
  heapUsed: s.heapUsed,
  heapTotal: s.heapTotal,
  external: s.external,
  arrayBuffers: s.arrayBuffers,
  youngGeneration: s.youngGeneration,
  rssMiB: mib(s.rss),
  heapUsedMiB: mib(s.heapUsed),
  heapTotalMiB: mib(s.heapTotal),
  externalMiB: mib(s.external),
  arrayBuffersMiB: mib(s.arrayBuffers),
  youngGenerationMiB: mib(s.youngGeneration)
})

/** HEAD, with "+changes" when tracked files differ from it (other work in progress included). */
const commit = (): string => {
  try {
    const cwd = path.dirname(here)
    const git = (...args: Array<string>) => execFileSync("git", args, { cwd, encoding: "utf8" }).trim()
    const dirty = git("status", "--porcelain", "--untracked-files=no") !== ""
    return `${git("rev-parse", "--short", "HEAD")}${dirty ? "+changes" : ""}`
  } catch {
    return "unknown"
  }
}

// ---- run ----

const main = async () => {
  const machine = {
    ...Bench.machine(),
    loadAverage: os.loadavg().map((x) => Bench.round(x, 2)),
    commit: commit()
  }
  log(
    `${VALIDATORS} validators over ${TRANSPORT} (CLI run, idle), ${IDLE_S} s idle, ` +
      `node options [${NODE_OPTIONS.join(" ")}], load ${machine.loadAverage.join(" ")}, commit ${machine.commit}`
  )
  const directory = fs.mkdtempSync(path.join(os.tmpdir(), "hotstuff2-footprint-"))
  try {
    const ports = await Effect.runPromise(reservePorts(VALIDATORS + 1))
    const identities = await Effect.runPromise(Effect.forEach(ports, () => Identity.generate))
    const configs = [
      ...configsFor(identities.slice(0, VALIDATORS), ports.slice(0, VALIDATORS), TRANSPORT),
      configsFor(identities.slice(VALIDATORS), ports.slice(VALIDATORS), TRANSPORT)[0]!
    ]
    const runArgs = (i: number) => {
      const file = path.join(directory, `validator-${i}.json`)
      fs.writeFileSync(file, JSON.stringify(configs[i]))
      return [...loader, cliEntry, "run", "--config", file]
    }

    const validators = Array.from({ length: VALIDATORS }, (_, i) => start(`validator ${i}`, runArgs(i)))
    const startups = await Promise.all(validators.map((v) => startValidator(v, PEERS)))
    log(
      `${VALIDATORS} validators up, each with ${PEERS} peers (${startups.map((s) => s.peersWallMs).join(", ")} ms)`
    )

    // The baselines start once the validators are up (not competing with their start-up) and idle
    // as long as they do.
    const alone = start("validator alone", runArgs(VALIDATORS))
    const probes = [
      { name: "bare node", child: start("bare node", ["-e", BARE]) },
      { name: "effect", child: start("probe effect", [...loader, probeEntry, "effect"]) },
      { name: "NodeNetwork", child: start("probe node", [...loader, probeEntry, "node"]) },
      { name: "effect + OTel SDK", child: start("probe otel", [...loader, probeEntry, "otel"]) }
    ]
    const loadedAt = await Promise.all(
      probes.map(async (p) => {
        await p.child.next("loaded", undefined, START_TIMEOUT_MS)
        return p.child.sample()
      })
    )
    const aloneStartup = await startValidator(alone, 0)
    const idleStart = Date.now()
    log(`baselines up; idling ${IDLE_S} s`)
    await new Promise((resolve) => setTimeout(resolve, IDLE_S * 1000))
    const idledS = Bench.round((Date.now() - idleStart) / 1000, 1)

    const peersNow = await Promise.all(validators.map((v) => v.status()))
    const samples = await Promise.all(validators.map((v) => v.sample()))
    const aloneSample = await alone.sample()
    const probeSamples = await Promise.all(probes.map((p) => p.child.sample()))

    const common = {
      bench: "footprint",
      transport: TRANSPORT,
      nodeOptions: NODE_OPTIONS.join(" "),
      idleS: idledS
    }
    samples.forEach((s, i) => {
      Bench.report({
        ...common,
        case: "validator",
        index: i,
        peersConnected: peersNow[i]!.peersConnected,
        ...memory(s),
        ...startups[i]!,
        handles: s.handles,
        resources: s.resources
      })
    })
    const med = (f: (s: ProcessSample) => number) => Bench.median(samples.map(f))
    const medianSample: ProcessSample = {
      ...samples[0]!,
      rss: med((s) => s.rss),
      heapUsed: med((s) => s.heapUsed),
      heapTotal: med((s) => s.heapTotal),
      external: med((s) => s.external),
      arrayBuffers: med((s) => s.arrayBuffers),
      youngGeneration: med((s) => s.youngGeneration)
    }
    const startMed = (f: (s: (typeof startups)[number]) => number) => Bench.median(startups.map(f))
    Bench.report({
      ...common,
      case: "validator median",
      validators: VALIDATORS,
      ...memory(medianSample),
      upWallMs: startMed((s) => s.upWallMs),
      upCpuMs: startMed((s) => s.upCpuMs),
      peersWallMs: startMed((s) => s.peersWallMs),
      peersCpuMs: startMed((s) => s.peersCpuMs)
    })
    Bench.report({ ...common, case: "validator alone", ...memory(aloneSample), ...aloneStartup })
    probes.forEach((p, i) => {
      Bench.report({
        ...common,
        case: `baseline ${p.name}`,
        ...memory(probeSamples[i]!),
        loadCpuMs: cpuMillis(loadedAt[i]!),
        loadWallMs: loadedAt[i]!.uptimeMillis,
        rssLoadedMiB: mib(loadedAt[i]!.rss)
      })
    })
    // Without the young generation, whose size depends on when the last collection ran (see
    // ProcessSample.youngGeneration), the processes compare term by term.
    const settled = (s: ProcessSample) => s.rss - s.youngGeneration
    const [bare, effect, node, otel] = probeSamples.map(settled) as [number, number, number, number]
    Bench.report({
      ...common,
      case: "breakdown",
      note:
        "median validator RSS = node + effect + ourCode + cliAndStarted + peers + youngGeneration; " +
        "the first five without the young generation; otelSdkIfLoaded: what loading the OTel SDK adds to effect",
      validatorMiB: mib(medianSample.rss),
      nodeMiB: mib(bare),
      effectMiB: mib(effect - bare),
      ourCodeMiB: mib(node - effect),
      cliAndStartedMiB: mib(settled(aloneSample) - node),
      peersMiB: mib(settled(medianSample) - settled(aloneSample)),
      youngGenerationMiB: mib(medianSample.youngGeneration),
      otelSdkIfLoadedMiB: mib(otel - effect),
      heapUsedMiB: mib(medianSample.heapUsed),
      heapFreeMiB: mib(medianSample.heapTotal - medianSample.heapUsed),
      externalMiB: mib(medianSample.external),
      arrayBuffersMiB: mib(medianSample.arrayBuffers)
    })
    Bench.report({
      bench: "footprint",
      case: "machine",
      ...machine,
      loadAverageAfter: os.loadavg().map((x) => Bench.round(x, 2))
    })
    await Promise.all([...children].map((c) => c.stop()))
  } finally {
    await Promise.all([...children].map((c) => c.stop().catch(() => {})))
    fs.rmSync(directory, { recursive: true, force: true })
  }
}

main().then(
  () => process.exit(0),
  (error: unknown) => {
    log(`failed: ${error instanceof Error ? error.message : String(error)}`)
    process.exit(1)
  }
)
