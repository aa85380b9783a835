// Four `hotstuff2-net run --drive` validators, each in a network namespace of its own (see
// fixtures/netns.ts), over TLS, optionally reaching each other through a latency relay in a fifth
// namespace. What a scenario asserts comes from the validators' own output: the status line every
// 500 ms (peers connected, mean RTT, view, timeouts), the driver's debug line for each certificate a
// leader forms (progress), its warnings for a broadcast or vote delivered twice or out of its
// origin's order, error lines, and exit codes.
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import * as Effect from "effect/Effect"
import type * as Scope from "effect/Scope"
import { peerId, seedOf } from "../fixtures/cluster.js"
import {
  type Exit,
  type Host,
  isRunning,
  type Lab,
  type Line,
  makeLab,
  type Process,
  SUBNET
} from "../fixtures/netns.js"

const PACKAGE = fileURLToPath(new URL("../..", import.meta.url))
const BUNDLES = path.join(PACKAGE, "node_modules", ".cache")
const BUNDLE_PREFIX = "hotstuff2-chaos-"
const PORT = 9000
const NETWORK = "hotstuff2-chaos"
export const SIZE = 4
/** Every wait of a scenario gives up after this; none of them is a claim about speed. */
export const DEADLINE_MS = 90_000

let bundled: Promise<string> | undefined
const bundleDir = path.join(BUNDLES, `${BUNDLE_PREFIX}${process.pid}`)

/** Removes this test process's bundles (call once its scenarios are done; its exit does it too). */
export const removeBundles = () => fs.rmSync(bundleDir, { recursive: true, force: true })

/**
 * The CLI (`src/cli/main.ts`, with the workspace packages' sources through the `@hotstuff2/source`
 * condition) and the relay, each bundled into one ESM file that plain `node` runs; npm packages stay
 * imports. Built once per test process (esbuild, which tsx brings): under tsx's loader each
 * validator process spends about 1.5 s more CPU starting (its hooks see every one of Effect's
 * modules), and a scenario took 30 s instead of 8 s to start four on a loaded machine of two cores.
 * The bundles live under node_modules/.cache, so that their imports resolve; `removeBundles`
 * removes them, a later run those of a test process that is gone.
 */
const bundle = Effect.promise(() => {
  bundled ??= (async () => {
    const { build } = await import("esbuild")
    fs.mkdirSync(BUNDLES, { recursive: true })
    for (const name of fs.readdirSync(BUNDLES)) {
      const pid = Number(name.slice(BUNDLE_PREFIX.length))
      if (name.startsWith(BUNDLE_PREFIX) && !isRunning(pid))
        fs.rmSync(path.join(BUNDLES, name), { recursive: true, force: true })
    }
    const outdir = bundleDir
    process.once("exit", removeBundles)
    await build({
      absWorkingDir: PACKAGE,
      entryPoints: { main: "src/cli/main.ts", relay: "test/chaos/relay.ts" },
      outdir,
      outExtension: { ".js": ".mjs" },
      bundle: true,
      platform: "node",
      format: "esm",
      target: "node20",
      conditions: ["@hotstuff2/source"],
      logLevel: "error",
      plugins: [
        {
          name: "npm-packages-stay-imports",
          setup: (b) => {
            b.onResolve({ filter: /^[^./]/ }, (args) =>
              args.path.startsWith("@hotstuff2/") ? undefined : { external: true }
            )
          }
        }
      ]
    })
    return outdir
  })()
  return bundled
})

export interface Status {
  readonly at: number
  readonly connected: number
  readonly rtt: number | undefined
  readonly view: number
  readonly proposals: number
  readonly votes: number
  readonly timeouts: number
}

export interface Certificate {
  readonly at: number
  readonly view: number
  readonly validator: number
}

const STATUS =
  /status: (\d+)\/\d+ peers connected, mean rtt (?:([\d.]+) ms|-), view (\d+), proposals (\d+), votes (\d+), timeouts (\d+)/
const CERTIFICATE = /driver: certificate for view (\d+)/
const VIOLATION = /driver: (?:broadcast|vote) .* delivered (?:again|after)/
const ERROR_LINE = /^\[[\d:.]+\] (?:ERROR|FATAL)\b/

export interface ClusterOptions {
  /** Block payload bytes (default 1024). */
  readonly payloadBytes?: number
  /** Leaders' pacing (default 50ms: at most 20 views/s, so that four validators leave CPU to spare). */
  readonly minViewTime?: string
  /** Validators reach each other through a TCP relay host that can add latency. */
  readonly relay?: boolean
}

export interface Validator {
  readonly index: number
  readonly host: Host
  readonly peerId: string
  /** Every process this validator ran, the current one last. */
  readonly incarnations: Array<Process>
}

export const start = (options: ClusterOptions = {}): Effect.Effect<Cluster, Error, Scope.Scope> =>
  Effect.gen(function* () {
    const bundles = yield* bundle
    const names = Array.from({ length: SIZE }, (_, i) => `v${i}`)
    const lab = yield* makeLab(
      options.relay ? [...names, { name: "relay", address: `${SUBNET}.100` }] : names
    )
    const dir = yield* Effect.acquireRelease(
      Effect.sync(() => fs.mkdtempSync(path.join(os.tmpdir(), "hotstuff2-chaos-"))),
      (d) => Effect.sync(() => fs.rmSync(d, { recursive: true, force: true }))
    )
    const hosts = lab.hosts.slice(0, SIZE)
    const relayHost = options.relay ? lab.hosts[SIZE] : undefined
    const reach = (j: number) =>
      relayHost === undefined ? `${hosts[j]!.address}:${PORT}` : `${relayHost.address}:${PORT + j}`
    const validators: Array<Validator> = hosts.map((host, i) => {
      const config = {
        identity: { seed: seedOf(i) },
        listen: `${host.address}:${PORT}`,
        networkId: NETWORK,
        validators: hosts.map((_, j) => ({ id: peerId(j), addresses: [reach(j)] }))
      }
      fs.writeFileSync(path.join(dir, `v${i}.json`), JSON.stringify(config))
      return { index: i, host, peerId: peerId(i), incarnations: [] }
    })
    let relay: Process | undefined
    if (relayHost !== undefined) {
      const routes = hosts.map((h, j) => `${PORT + j}=${h.address}:${PORT}`)
      relay = yield* lab.spawn(relayHost, [
        process.execPath,
        path.join(bundles, "relay.mjs"),
        relayHost.address,
        ...routes
      ])
      const r = relay
      yield* waitFor(
        "the relay to listen",
        () => r.lines.some((l) => l.text === "relay ready"),
        () => tail(r)
      )
    }
    const cluster = new Cluster(lab, validators, dir, path.join(bundles, "main.mjs"), options, relay)
    // With CHAOS_LOGS=DIR, every process's output is kept there (one folder per cluster).
    const logs = process.env.CHAOS_LOGS
    if (logs) yield* Effect.addFinalizer(() => Effect.sync(() => cluster.saveLogs(logs)))
    for (const v of validators) yield* cluster.launch(v.index)
    return cluster
  })

/** A process's last lines, without the certificate lines (too many to tell anything). */
const tail = (p: Process, n = 25) =>
  p.lines
    .filter((l) => !CERTIFICATE.test(l.text))
    .slice(-n)
    .map((l) => `    ${l.text}`)
    .join("\n")

/** Polls `condition` every 200 ms until it holds, for at most DEADLINE_MS; the failure shows `context`. */
export const waitFor = (
  what: string,
  condition: () => boolean,
  context: () => string,
  within = DEADLINE_MS
): Effect.Effect<number, Error> =>
  Effect.gen(function* () {
    const started = Date.now()
    while (
      !(yield* Effect.try({ try: condition, catch: (e) => (e instanceof Error ? e : new Error(String(e))) }))
    ) {
      if (Date.now() - started > within) {
        return yield* Effect.fail(new Error(`no ${what} within ${within / 1000} s\n${context()}`))
      }
      yield* Effect.sleep("200 millis")
    }
    return Date.now()
  })

let saved = 0

export class Cluster {
  /** Processes the test killed or stopped on purpose: their exits are expected. */
  private readonly killed = new Set<Process>()
  private readonly parsed = new Map<
    Process,
    { seen: number; statuses: Array<Status>; certificates: Array<number> }
  >()

  constructor(
    readonly lab: Lab,
    readonly validators: ReadonlyArray<Validator>,
    private readonly dir: string,
    private readonly cli: string,
    private readonly options: ClusterOptions,
    readonly relay: Process | undefined
  ) {}

  /** Starts a (new) process of validator `i` with its config and key. */
  launch(i: number): Effect.Effect<void, Error> {
    const v = this.validators[i]!
    const args = [
      process.execPath,
      this.cli,
      "run",
      "--config",
      path.join(this.dir, `v${i}.json`),
      "--drive",
      "--status-interval",
      "500ms",
      "--min-view-time",
      this.options.minViewTime ?? "50ms",
      "--payload",
      String(this.options.payloadBytes ?? 1024),
      "--log-level",
      "debug"
    ]
    // The test's own HOTSTUFF2_* variables would override the validators' configs.
    const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith("HOTSTUFF2_")))
    return Effect.map(
      this.lab.spawn(v.host, args, { env: env as Record<string, string>, inherit: false }),
      (p) => {
        v.incarnations.push(p)
      }
    )
  }

  current(i: number): Process {
    return this.validators[i]!.incarnations.at(-1)!
  }

  /** Sends `signal` to validator i's process; SIGKILL waits for its exit. */
  signal(i: number, signal: NodeJS.Signals): Effect.Effect<Exit | undefined> {
    const p = this.current(i)
    if (signal === "SIGKILL") this.killed.add(p)
    p.child.kill(signal)
    return signal === "SIGKILL" ? Effect.map(p.exited, (e) => e) : Effect.succeed(undefined)
  }

  private parse(p: Process) {
    let state = this.parsed.get(p)
    if (state === undefined) {
      state = { seen: 0, statuses: [], certificates: [] }
      this.parsed.set(p, state)
    }
    for (; state.seen < p.lines.length; state.seen++) {
      const { at, text } = p.lines[state.seen]!
      const s = STATUS.exec(text)
      if (s !== null) {
        state.statuses.push({
          at,
          connected: Number(s[1]),
          rtt: s[2] === undefined ? undefined : Number(s[2]),
          view: Number(s[3]),
          proposals: Number(s[4]),
          votes: Number(s[5]),
          timeouts: Number(s[6])
        })
        continue
      }
      const c = CERTIFICATE.exec(text)
      if (c !== null) state.certificates.push(at, Number(c[1]))
    }
    return state
  }

  /** The latest status line of validator i's current process. */
  status(i: number): Status | undefined {
    return this.parse(this.current(i)).statuses.at(-1)
  }

  /** Status lines of validator i's current process read after `since`. */
  statusesSince(i: number, since: number): ReadonlyArray<Status> {
    return this.parse(this.current(i)).statuses.filter((s) => s.at > since)
  }

  /** Certificates formed by any process of the given validators (default all), read after `since`. */
  certificates(
    since = 0,
    among: ReadonlyArray<number> = this.validators.map((v) => v.index)
  ): Array<Certificate> {
    const all: Array<Certificate> = []
    for (const i of among) {
      for (const p of this.validators[i]!.incarnations) {
        const flat = this.parse(p).certificates
        for (let k = 0; k < flat.length; k += 2) {
          if (flat[k]! > since) all.push({ at: flat[k]!, view: flat[k + 1]!, validator: i })
        }
      }
    }
    return all.sort((a, b) => a.at - b.at)
  }

  /** The validator that formed the latest certificate: the leader of the view after it. */
  leader(): number {
    return this.certificates().at(-1)?.validator ?? 0
  }

  /** Validator i's current process reports `connected` peers (default all the others). */
  connected(i: number, connected = SIZE - 1): boolean {
    return this.status(i)?.connected === connected
  }

  /** Lines of every validator matching `pattern`, read after `since`. */
  linesMatching(pattern: RegExp, since = 0): Array<string> {
    return this.validators.flatMap((v) =>
      v.incarnations.flatMap((p) =>
        p.lines.filter((l) => l.at > since && pattern.test(l.text)).map((l) => `v${v.index}: ${l.text}`)
      )
    )
  }

  /** What must never happen: deliveries twice or out of order, error lines, exits the test did not cause. */
  problems(): Array<string> {
    const found = [...this.linesMatching(VIOLATION), ...this.linesMatching(ERROR_LINE)]
    for (const v of this.validators) {
      for (const p of v.incarnations) {
        const exit = p.exit()
        if (exit !== undefined && !this.killed.has(p)) {
          found.push(`v${v.index} (pid ${p.pid}) exited on its own: code ${exit.code}, signal ${exit.signal}`)
        }
      }
    }
    if (this.relay?.exit() !== undefined) found.push(`the relay exited: ${JSON.stringify(this.relay.exit())}`)
    return found
  }

  /**
   * Waits until `condition` holds, for at most DEADLINE_MS; fails at once when a process exits that
   * the test did not stop. The failure shows every validator's last lines.
   */
  until(what: string, condition: () => boolean): Effect.Effect<number, Error> {
    return waitFor(
      what,
      () => {
        const exited = this.problems().filter(
          (p) => p.includes("exited on its own") || p.includes("relay exited")
        )
        if (exited.length > 0)
          throw new Error(`${exited.join("\n")}\n(waiting for ${what})\n${this.report()}`)
        return condition()
      },
      () => this.report()
    )
  }

  /** Every validator's current process is running. */
  alive(): boolean {
    return this.validators.every((v) => this.current(v.index).exit() === undefined)
  }

  /** Waits until every validator is connected to the other three and `count` certificates formed since. */
  healthy(count = 4): Effect.Effect<number, Error> {
    return Effect.gen(this, function* () {
      const connectedAt = yield* this.until("validator connected to all the others", () =>
        this.validators.every((v) => this.connected(v.index))
      )
      return yield* this.until(
        `${count} certificates once all connected`,
        () => this.certificates(connectedAt).length >= count
      )
    })
  }

  /**
   * SIGTERM to every validator (SIGCONT first, in case one is stopped); each must close its network
   * and exit 0 within 30 s.
   */
  shutdown(): Effect.Effect<ReadonlyArray<Exit>, Error> {
    return Effect.forEach(
      this.validators,
      (v) => {
        const p = this.current(v.index)
        p.child.kill("SIGCONT")
        p.child.kill("SIGTERM")
        return p.exited.pipe(
          Effect.timeoutFail({
            duration: "30 seconds",
            onTimeout: () => new Error(`v${v.index} still running 30 s after SIGTERM\n${tail(p)}`)
          })
        )
      },
      { concurrency: "unbounded" }
    )
  }

  /** Writes every process's output into a new folder under `root`. */
  saveLogs(root: string): void {
    const folder = path.join(root, `cluster-${process.pid}-${++saved}`)
    fs.mkdirSync(folder, { recursive: true })
    const write = (name: string, p: Process) =>
      fs.writeFileSync(path.join(folder, name), p.lines.map((l) => `${l.at} ${l.text}\n`).join(""))
    for (const v of this.validators)
      for (const [k, p] of v.incarnations.entries()) write(`v${v.index}-${k}.log`, p)
    if (this.relay !== undefined) write("relay.log", this.relay)
  }

  /** The last lines of every validator's current process, and its latest status. */
  report(): string {
    return this.validators
      .map((v) => {
        const p = this.current(v.index)
        const exit = p.exit()
        return `  v${v.index} (pid ${p.pid}, ${exit === undefined ? "running" : `exited ${exit.code ?? exit.signal}`}):\n${tail(p, 12)}`
      })
      .join("\n")
  }
}

export type { Line }
