// Issue 17's series: the node benchmark (node.bench.ts) run N times on the machine as it is ("quiet")
// and N times with BENCH_LOAD=1 (a busy process on the peer's CPU), one run after the other. Each
// run's result lines go to stdout with the run's number, variant, the load average before it and
// the commit; after the last run, one summary line per variant with the median over runs of each
// ratio to raw, and a Markdown table of every run on stderr (for BENCHMARKS.md).
//
// `npm run bench:series` (built first). Env: SERIES_RUNS (default 5), SERIES_VARIANTS ("quiet,loaded"),
// and the node benchmark's own (BENCH_CASES, BENCH_VALIDATORS, ...), passed through to each run.
import { execFileSync, spawn } from "node:child_process"
import * as os from "node:os"
import { fileURLToPath } from "node:url"
import { Bench } from "@hotstuff2/testing"

const { median, round } = Bench

const RUNS = Math.max(1, Math.min(20, Number(process.env.SERIES_RUNS ?? 5) || 5))
const VARIANTS = (process.env.SERIES_VARIANTS ?? "quiet,loaded")
  .split(",")
  .filter((v): v is "quiet" | "loaded" => v === "quiet" || v === "loaded")
const script = fileURLToPath(new URL("./node.bench.js", import.meta.url))

const log = (text: string): void => {
  process.stderr.write(`[series] ${text}\n`)
}

const commit = (() => {
  try {
    return execFileSync("git", ["rev-parse", "--short", "HEAD"], { encoding: "utf8" }).trim()
  } catch {
    return "unknown"
  }
})()

type Line = Record<string, unknown>

/** One run of the node benchmark: its JSON lines (progress goes to our stderr). */
const runOnce = (loaded: boolean): Promise<ReadonlyArray<Line>> =>
  new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [script], {
      env: { ...process.env, BENCH_LOAD: loaded ? "1" : "0" },
      stdio: ["ignore", "pipe", "inherit"]
    })
    let out = ""
    child.stdout.setEncoding("utf8")
    child.stdout.on("data", (chunk: string) => {
      out += chunk
    })
    child.once("error", reject)
    child.once("exit", (code) => {
      const lines = out
        .split("\n")
        .filter((l) => l.trim().length > 0)
        .flatMap((l): Array<Line> => {
          try {
            return [JSON.parse(l) as Line]
          } catch {
            log(`not a JSON line on stdout: ${l.slice(0, 120)}`)
            return []
          }
        })
      if (code !== 0) log(`run exited with ${code}`)
      resolve(lines)
    })
  })

interface Run {
  readonly variant: "quiet" | "loaded"
  readonly index: number
  readonly load: number
  readonly date: string
  readonly ratios: Record<string, number>
  readonly lines: ReadonlyArray<Line>
}

const main = async () => {
  const runs: Array<Run> = []
  for (const variant of VARIANTS) {
    for (let i = 1; i <= RUNS; i++) {
      const load = round(os.loadavg()[0]!, 2)
      const date = new Date().toISOString()
      log(`${variant} run ${i}/${RUNS} (load average ${load}, commit ${commit})`)
      const lines = await runOnce(variant === "loaded")
      for (const line of lines) {
        process.stdout.write(`${JSON.stringify({ ...line, series: { variant, run: i, load, commit } })}\n`)
      }
      const summary = lines.find((l) => l.case === "summary")
      const ratios = (summary?.ratiosToRaw ?? {}) as Record<string, number>
      runs.push({ variant, index: i, load, date, ratios, lines })
    }
  }
  const keys = [...new Set(runs.flatMap((r) => Object.keys(r.ratios)))]
  for (const variant of VARIANTS) {
    const mine = runs.filter((r) => r.variant === variant)
    const medians: Record<string, number | null> = {}
    for (const key of keys) {
      const xs = mine.map((r) => r.ratios[key]).filter((x): x is number => typeof x === "number")
      medians[key] = xs.length === 0 ? null : round(median(xs))
    }
    process.stdout.write(
      `${JSON.stringify({ bench: "node", case: "series summary", variant, runs: mine.length, commit, medianRatiosToRaw: medians })}\n`
    )
  }
  // The table for BENCHMARKS.md: one row per run, one column per ratio.
  const table = [
    `| variant | run | date (UTC) | load before | ${keys.join(" | ")} |`,
    `|---|---|---|---|${keys.map(() => "---").join("|")}|`,
    ...runs.map(
      (r) =>
        `| ${r.variant} | ${r.index} | ${r.date.slice(0, 16).replace("T", " ")} | ${r.load} | ${keys
          .map((k) => (r.ratios[k] === undefined ? "-" : String(r.ratios[k])))
          .join(" | ")} |`
    )
  ]
  process.stderr.write(`${table.join("\n")}\n`)
}

main().then(
  () => process.exit(0),
  (error: unknown) => {
    log(`failed: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}`)
    process.exit(1)
  }
)
