// Attack benchmark (issue 11): the throughput the other validators keep while one of four is
// attacked, as a ratio of their throughput without the attack, measured in the same run.
//
// Four validators run the compiled CLI (`hotstuff2-net run --drive`, TLS, 127.0.0.1, leaders paced by
// --min-view-time), validator 3 with the attack suite's hardened limits; the attacks of
// test/fixtures/attacker.ts come from this process, from 127.0.1.x. Throughput: proposals delivered
// per second, summed over the other validators (`hotstuff2_messages_received_total{type="Proposal"}`
// in their Prometheus scrapes, read at each window's edges). Per attack, windows alternate:
// baseline, attack, baseline, attack, ..., baseline (BENCH_ROUNDS attack windows); an attack window's
// ratio is its rate over the mean of the two baselines beside it. An attack starts a warm-up before
// its window (a slowloris fills the slots first) and stops at its end; attacks that end on their own
// (a key banned) are repeated with fresh keys until the window ends.
//
// The crash case kills validator 0 (SIGKILL) for its attack windows, in which its key's connections
// to validator 3 keep being reset mid-frame; others are validators 1 and 2, and each round also
// measures a quiet window with validator 0 down, so that the crash is reported against both.
//
// One JSON line per window and per attack on stdout, then a summary; progress on stderr. Validator 3
// is restarted once, between the attacks before authentication (it admits validators only) and those
// of an authenticated peer (it admits non-validators).
//
// Env: BENCH_ROUNDS (default 3), BENCH_WINDOW_MS (default 5000), BENCH_MIN_VIEW_TIME (default
// "50ms"), BENCH_ATTACKS (comma-separated names, default all; see `attacks`).
import * as fs from "node:fs"
import * as os from "node:os"
import { Bench } from "@hotstuff2/testing"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import {
  attackerHosts,
  compressionBomb,
  compressionBombs,
  crashMidFrame,
  garbage,
  HEARTBEAT_LIMIT,
  handshakes,
  hardened,
  hugeLengthPrefix,
  outsider,
  plaintext,
  randomBytes,
  randomMessages,
  rateFlood,
  replayHello,
  replayRecordedTls,
  slowloris,
  type Target,
  targetOf
} from "../test/fixtures/attacker.js"
import { identity } from "../test/fixtures/cluster.js"
import { make, mib, type ValidatorSetShape, watchRss } from "../test/fixtures/validatorProcesses.js"
import { waitLive } from "../test/fixtures/wait.js"

Bench.resultsOnStdout()

const { machine, median, report, round } = Bench

const ROUNDS = Math.max(1, Math.min(9, Number(process.env.BENCH_ROUNDS ?? 3) || 3))
const WINDOW_MS = Math.max(1000, Number(process.env.BENCH_WINDOW_MS ?? 5000) || 5000)
const WARMUP_MS = 1000
const MIN_VIEW_TIME = process.env.BENCH_MIN_VIEW_TIME ?? "50ms"
const TARGET = 3
const DEADLINE_MS = 40 * 60_000

const startedAt = Bench.now()
/** Seconds since the benchmark started. */
const at = () => round(Number(Bench.now() - startedAt) / 1e9, 1)
const log = (text: string) => process.stderr.write(`[attack.bench ${at()} s] ${text}\n`)

type Mode = "validators only" | "admits non-validators"

interface Stop {
  readonly until: number
}

interface Attack {
  readonly name: string
  readonly mode: Mode
  /** Runs from its warm-up until `stop.until`. */
  readonly run: (target: Target, stop: Stop) => Promise<unknown>
}

/** Repeats `f` until `stop.until`. */
const repeat = async (stop: Stop, f: (i: number) => Promise<unknown>) => {
  for (let i = 0; Date.now() < stop.until; i++) await f(i)
}

let nextKey = 1000
const freshKey = () => outsider(nextKey++)
const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, Math.max(0, ms)))
const MANY = 1_000_000

const attacks: ReadonlyArray<Attack> = [
  {
    name: "garbage",
    mode: "validators only",
    run: async (target, stop) =>
      garbage(
        target,
        withStop({ connections: MANY, concurrency: 40, hosts: await attackerHosts(20, 0), bytes: 512 }, stop)
      )
  },
  {
    name: "plaintext",
    mode: "validators only",
    run: async (target, stop) =>
      plaintext(
        target,
        withStop({ connections: MANY, identity: identity(0), hosts: await attackerHosts(5, 20) }, stop)
      )
  },
  {
    name: "unknown-key",
    mode: "validators only",
    run: async (target, stop) =>
      handshakes(
        target,
        withStop(
          {
            identity: outsider(1),
            attempts: MANY,
            concurrency: 4,
            hosts: await attackerHosts(5, 25)
          },
          stop
        )
      )
  },
  {
    name: "replayed-handshake",
    mode: "validators only",
    run: async (target, stop) => {
      const hosts = await attackerHosts(5, 30)
      await repeat(stop, async () => {
        const options = withStop({ hosts, identity: outsider(2), copies: 10 }, stop)
        await replayRecordedTls(target, options)
        await replayHello(target, options)
      })
    }
  },
  {
    name: "slowloris",
    mode: "validators only",
    run: async (target, stop) =>
      slowloris(
        target,
        withStop({ connections: 300, hosts: await attackerHosts(30, 40), reopenAfterMs: 1000 }, stop)
      )
  },
  {
    name: "handshake-flood",
    mode: "validators only",
    run: async (target, stop) =>
      handshakes(
        target,
        withStop(
          {
            identity: outsider(3),
            attempts: MANY,
            concurrency: 200,
            hosts: await attackerHosts(50, 70)
          },
          stop
        )
      )
  },
  {
    name: "4gib-length-prefix",
    mode: "admits non-validators",
    run: async (target, stop) => {
      const [source] = await attackerHosts(1, 130)
      await repeat(stop, () =>
        hugeLengthPrefix(target, freshKey(), withStop({ source, maxSessions: 8 }, stop))
      )
    }
  },
  {
    name: "random-frames",
    mode: "admits non-validators",
    run: async (target, stop) => {
      const [first, second] = await attackerHosts(2, 131)
      await repeat(stop, async () => {
        await randomMessages(target, freshKey(), withStop({ source: first, perFrame: 2 }, stop))
        await randomBytes(target, freshKey(), withStop({ source: second, maxSessions: 8 }, stop))
      })
    }
  },
  {
    name: "compression-bombs",
    mode: "admits non-validators",
    run: async (target, stop) => {
      const [source] = await attackerHosts(1, 133)
      const bombs = compressionBombs(4 * 1024 * 1024)
      await repeat(stop, () =>
        compressionBomb(target, freshKey(), withStop({ source, bombs, maxSessions: 12 }, stop))
      )
    }
  },
  {
    name: "10x-rate-limit",
    mode: "admits non-validators",
    run: async (target, stop) => {
      const [source] = await attackerHosts(1, 134)
      await repeat(stop, () =>
        rateFlood(
          target,
          freshKey(),
          withStop({ source, perSecond: 10 * HEARTBEAT_LIMIT, maxSessions: 20 }, stop)
        )
      )
    }
  }
]

/** `options` with `until` read from `stop` at each use (a spread would copy the number once). */
function withStop<T extends object>(options: T, stop: Stop): T & Stop {
  return Object.defineProperty(options, "until", { get: () => stop.until, enumerable: true }) as T & Stop
}

const CRASH = "crash-mid-frame"
const selected = new Set(
  (process.env.BENCH_ATTACKS ?? [...attacks.map((a) => a.name), CRASH].join(","))
    .split(",")
    .map((s) => s.trim())
    .filter((s) => s.length > 0)
)

// ---- measuring ----

/** CPU seconds (user + system) a process has used, from /proc; undefined when unreadable. */
const cpuSeconds = (pid: number): number | undefined => {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, "utf8")
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ")
    return (Number(fields[11]) + Number(fields[12])) / 100 // utime, stime in USER_HZ (100 on Linux)
  } catch {
    return undefined
  }
}

interface Window {
  readonly proposalsPerSecond: number
  readonly seconds: number
  readonly targetCpu: number | null
  readonly attackerCpu: number
  readonly targetRssMaxMiB: number
  readonly load1: number
}

/** Proposals delivered per second at `others` over `ms`, with the machine's state meanwhile. */
const measure = (set: ValidatorSetShape, others: ReadonlyArray<number>, ms: number) =>
  Effect.gen(function* () {
    const pid = set.process(TARGET).pid
    const rss = watchRss(pid)
    const cpu0 = cpuSeconds(pid)
    const self0 = process.cpuUsage()
    const t0 = Bench.now()
    const before = yield* Effect.forEach(others, (i) => set.scrape(i), { concurrency: "unbounded" })
    yield* Effect.sleep(ms)
    const after = yield* Effect.forEach(others, (i) => set.scrape(i), { concurrency: "unbounded" })
    const seconds = Number(Bench.now() - t0) / 1e9
    const cpu1 = cpuSeconds(pid)
    const self = process.cpuUsage(self0)
    const delivered = after.reduce(
      (sum, m, k) => sum + m.proposalsDelivered - before[k]!.proposalsDelivered,
      0
    )
    return {
      proposalsPerSecond: round(delivered / seconds, 2),
      seconds: round(seconds, 2),
      targetCpu: cpu0 === undefined || cpu1 === undefined ? null : round((cpu1 - cpu0) / seconds, 2),
      attackerCpu: round((self.user + self.system) / 1e6 / seconds, 2),
      targetRssMaxMiB: round(rss.stop() / 1024 / 1024, 1),
      load1: round(os.loadavg()[0]!, 2)
    } satisfies Window
  })

const runAttack = (set: ValidatorSetShape, attack: Attack, stopAt: { at: number }) =>
  Effect.fork(
    Effect.promise(() =>
      attack.run(targetOf(set.address(TARGET), set.networkId), {
        get until() {
          return stopAt.at
        }
      })
    )
  )

const ratiosOf = (bases: ReadonlyArray<Window>, attacked: ReadonlyArray<Window>) =>
  attacked.map((w, r) => {
    const base = (bases[r]!.proposalsPerSecond + bases[r + 1]!.proposalsPerSecond) / 2
    return base > 0 ? round(w.proposalsPerSecond / base, 3) : 0
  })

/** baseline, attack, baseline, ..., baseline for one attack: its windows and ratios. */
const benchAttack = (set: ValidatorSetShape, attack: Attack) =>
  Effect.gen(function* () {
    const others = [0, 1, 2]
    const bases: Array<Window> = [yield* measure(set, others, WINDOW_MS)]
    const attacked: Array<Window> = []
    for (let r = 0; r < ROUNDS; r++) {
      const stopAt = { at: Date.now() + WARMUP_MS + WINDOW_MS + 60_000 }
      const fiber = yield* runAttack(set, attack, stopAt)
      yield* Effect.sleep(WARMUP_MS)
      const window = yield* measure(set, others, WINDOW_MS)
      stopAt.at = Date.now()
      yield* Fiber.join(fiber)
      if (!set.alive(TARGET)) throw new Error(`validator 3 died under ${attack.name}\n${set.describe()}`)
      attacked.push(window)
      report({
        bench: "attack",
        case: "window",
        at: at(),
        attack: attack.name,
        round: r,
        phase: "attack",
        ...window
      })
      // Bans end, refused sockets drain: the next baseline starts from a quiet validator 3.
      yield* set.ready()
      const base = yield* measure(set, others, WINDOW_MS)
      bases.push(base)
      report({
        bench: "attack",
        case: "window",
        at: at(),
        attack: attack.name,
        round: r,
        phase: "baseline",
        ...base
      })
    }
    const ratios = ratiosOf(bases, attacked)
    const result = {
      bench: "attack",
      case: attack.name,
      ratios,
      medianRatio: median(ratios),
      baselineMedian: median(bases.map((w) => w.proposalsPerSecond)),
      attackMedian: median(attacked.map((w) => w.proposalsPerSecond)),
      targetCpuUnderAttack: median(attacked.map((w) => w.targetCpu ?? 0)),
      attackerCpu: median(attacked.map((w) => w.attackerCpu)),
      targetRssMaxMiB: Math.max(...attacked.map((w) => w.targetRssMaxMiB)),
      unit: "proposals delivered per second, summed over validators 0-2"
    }
    report(result)
    return result
  })

/** Validator 0 killed; its key's connections to validator 3 reset mid-frame, every 500 ms. */
const benchCrash = (set: ValidatorSetShape) =>
  Effect.gen(function* () {
    const others = [1, 2]
    const bases: Array<Window> = [yield* measure(set, others, WINDOW_MS)]
    const attacked: Array<Window> = []
    const quiet: Array<Window> = []
    const crash: Attack = {
      name: CRASH,
      mode: "admits non-validators",
      run: (target, stop) =>
        repeat(stop, async () => {
          await crashMidFrame(target, identity(0))
          await sleep(500)
        })
    }
    for (let r = 0; r < ROUNDS; r++) {
      yield* set.stop(0, "SIGKILL")
      yield* waitLive(
        "validator 3 to see validator 0 gone",
        Effect.map(set.scrape(TARGET), (m) => m.connections === set.size - 2),
        { within: "60 seconds" }
      )
      const stopAt = { at: Date.now() + WARMUP_MS + WINDOW_MS + 60_000 }
      const fiber = yield* runAttack(set, crash, stopAt)
      yield* Effect.sleep(WARMUP_MS)
      const window = yield* measure(set, others, WINDOW_MS)
      stopAt.at = Date.now()
      yield* Fiber.join(fiber)
      attacked.push(window)
      report({
        bench: "attack",
        case: "window",
        at: at(),
        attack: CRASH,
        round: r,
        phase: "attack",
        ...window
      })
      const down = yield* measure(set, others, WINDOW_MS)
      quiet.push(down)
      report({
        bench: "attack",
        case: "window",
        at: at(),
        attack: CRASH,
        round: r,
        phase: "validator 0 down, quiet",
        ...down
      })
      yield* set.start(0)
      yield* set.ready()
      const base = yield* measure(set, others, WINDOW_MS)
      bases.push(base)
      report({
        bench: "attack",
        case: "window",
        at: at(),
        attack: CRASH,
        round: r,
        phase: "baseline",
        ...base
      })
    }
    const ratios = ratiosOf(bases, attacked)
    const ratiosToDown = attacked.map((w, r) =>
      quiet[r]!.proposalsPerSecond > 0 ? round(w.proposalsPerSecond / quiet[r]!.proposalsPerSecond, 3) : 0
    )
    const result = {
      bench: "attack",
      case: CRASH,
      ratios,
      medianRatio: median(ratios),
      ratiosToValidator0Down: ratiosToDown,
      medianRatioToValidator0Down: median(ratiosToDown),
      baselineMedian: median(bases.map((w) => w.proposalsPerSecond)),
      attackMedian: median(attacked.map((w) => w.proposalsPerSecond)),
      validator0DownMedian: median(quiet.map((w) => w.proposalsPerSecond)),
      targetRssMaxMiB: Math.max(...attacked.map((w) => w.targetRssMaxMiB)),
      unit: "proposals delivered per second, summed over validators 1 and 2"
    }
    report(result)
    return result
  })

const main = Effect.gen(function* () {
  let mode: Mode = "validators only"
  const configure = (config: Parameters<typeof hardened>[0]) =>
    hardened(config, { admitNonValidators: mode === "admits non-validators" })
  log(`starting four validators (leaders paced by --min-view-time ${MIN_VIEW_TIME})`)
  const set = yield* make({
    minViewTime: MIN_VIEW_TIME,
    configure: (i, config) => (i === TARGET ? configure(config) : config)
  })
  const info = {
    ...machine(),
    load: os.loadavg().map((x) => round(x, 2)),
    rounds: ROUNDS,
    windowMs: WINDOW_MS,
    minViewTime: MIN_VIEW_TIME,
    validators: set.size,
    target: TARGET
  }
  const results: Record<string, number> = {}
  for (const attack of attacks) {
    if (!selected.has(attack.name)) continue
    if (attack.mode !== mode) {
      mode = attack.mode
      log(`restarting validator 3: ${mode}`)
      yield* set.start(TARGET, configure)
      yield* set.ready()
    }
    log(`${attack.name}: ${ROUNDS} rounds of ${WINDOW_MS} ms`)
    results[attack.name] = (yield* benchAttack(set, attack)).medianRatio
  }
  if (selected.has(CRASH)) {
    log(`${CRASH}: ${ROUNDS} rounds of ${WINDOW_MS} ms`)
    const crash = yield* benchCrash(set)
    results[CRASH] = crash.medianRatio
    results[`${CRASH} (to validator 0 down)`] = crash.medianRatioToValidator0Down
  }
  report({
    bench: "attack",
    case: "summary",
    medianRatios: results,
    goal: ">= 0.9 (reported, not asserted)",
    belowGoal: Object.entries(results)
      .filter(([, r]) => r < 0.9)
      .map(([name]) => name),
    targetRss: mib(set.rss(TARGET) ?? 0),
    seconds: at(),
    ...info,
    loadAtEnd: os.loadavg().map((x) => round(x, 2))
  })
})

// An exit runs the validator fixture's hook, which kills the validators.
for (const signal of ["SIGINT", "SIGTERM"] as const) process.once(signal, () => process.exit(130))

setTimeout(() => {
  log(`deadline of ${DEADLINE_MS / 60_000} minutes passed: stopping`)
  process.exit(1)
}, DEADLINE_MS).unref()

Effect.runPromise(Effect.scoped(main)).then(
  () => process.exit(0),
  (error: unknown) => {
    log(`failed: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}`)
    process.exit(1)
  }
)
