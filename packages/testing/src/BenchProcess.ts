// Two-process benchmarks: the benchmark process pinned to CPU 0, a forked peer pinned to CPU 1 that
// answers commands over IPC with typed reports, every child killed when the benchmark ends, fails,
// is interrupted or passes its deadline.
import { type ChildProcess, fork } from "node:child_process"
import * as os from "node:os"
import { fileURLToPath } from "node:url"
import { pin } from "./Bench.js"

/** What a forked peer reports: `type` names it; an `error` report fails whoever waits. */
export interface Report {
  readonly type: string
  readonly detail?: string
}

export interface Supervisor {
  readonly log: (text: string) => void
  /** Whether this process got CPU 0 (children then get CPU 1). */
  readonly pinned: boolean
  /**
   * Forks `script` (a file beside `from`, `.ts` under tsx or `.js` compiled, as the caller runs)
   * with an IPC channel, and waits for its first report of type `firstReport`.
   */
  readonly start: <R extends Report>(
    from: string,
    script: string,
    args: ReadonlyArray<string>,
    firstReport: R["type"]
  ) => Promise<{ readonly child: BenchChild<R>; readonly first: R }>
}

/**
 * Kills every child on exit, on SIGINT/SIGTERM, and after `deadlineMs`; pins this process to CPU 0
 * unless `BENCH_PIN=0`. Child Node options come from `BENCH_CHILD_NODE_OPTIONS` (e.g. `--cpu-prof`).
 */
export const supervise = (
  name: string,
  options: { readonly deadlineMs: number; readonly stepTimeoutMs: number }
): Supervisor => {
  const log = (text: string): void => {
    process.stderr.write(`[${name}] ${text}\n`)
  }
  const children = new Set<ChildProcess>()
  const killChildren = (): void => {
    for (const child of children)
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL")
    children.clear()
  }
  process.on("exit", killChildren)
  for (const signal of ["SIGINT", "SIGTERM"] as const) {
    process.on(signal, () => {
      killChildren()
      process.exit(130)
    })
  }
  setTimeout(() => {
    log(`deadline of ${options.deadlineMs / 1000} s passed: stopping`)
    killChildren()
    process.exit(1)
  }, options.deadlineMs).unref()

  const pinned = process.env.BENCH_PIN !== "0" && os.cpus().length >= 2 && pin(process.pid, 0)

  const start = async <R extends Report>(
    from: string,
    script: string,
    args: ReadonlyArray<string>,
    firstReport: R["type"]
  ) => {
    // Under tsx the child runs from source with the same loader and condition; compiled, compiled.
    const fromSource = from.endsWith(".ts")
    const file = fileURLToPath(new URL(`./${script}${fromSource ? ".ts" : ".js"}`, from))
    const execArgv = [
      ...(fromSource ? ["--import", "tsx", "--conditions=@hotstuff2/source"] : []),
      ...(process.env.BENCH_CHILD_NODE_OPTIONS ?? "").split(" ").filter((a) => a.length > 0)
    ]
    // The child's stdout goes to our stderr: stdout carries only result lines.
    const forked = fork(file, [...args], { execArgv, stdio: ["ignore", 2, 2, "ipc"] })
    children.add(forked)
    forked.once("exit", () => children.delete(forked))
    const child = new BenchChild<R>(`${script} ${args[0] ?? ""}`.trim(), forked, options.stepTimeoutMs)
    const first = await child.next(firstReport)
    if (pinned && forked.pid !== undefined) pin(forked.pid, 1)
    return { child, first }
  }

  return { log, pinned, start }
}

/** A forked peer and its IPC reports, one awaited at a time. */
export class BenchChild<R extends Report> {
  private waiter: { readonly type: R["type"]; readonly settle: (r: R | Error) => void } | undefined
  private exited: Error | undefined

  constructor(
    readonly name: string,
    readonly child: ChildProcess,
    readonly stepTimeoutMs: number
  ) {
    child.on("message", (message: R) => {
      if (message.type === "error") return this.settle(new Error(`${name}: ${message.detail}`))
      if (this.waiter?.type === message.type) this.settle(message)
    })
    child.on("exit", (code, signal) => {
      this.exited = new Error(`${name} exited (code ${code}, signal ${signal})`)
      this.settle(this.exited)
    })
  }

  private settle(result: R | Error): void {
    const waiter = this.waiter
    this.waiter = undefined
    waiter?.settle(result)
  }

  /** The next report of this type; fails on timeout, on an error report, or when the child exits. */
  next(type: R["type"], timeoutMs = this.stepTimeoutMs): Promise<R> {
    if (this.exited !== undefined) return Promise.reject(this.exited)
    if (this.waiter !== undefined) return Promise.reject(new Error(`${this.name}: already waiting`))
    return new Promise<R>((resolve, reject) => {
      const timer = setTimeout(
        () => this.settle(new Error(`${this.name}: no '${type}' within ${timeoutMs} ms`)),
        timeoutMs
      )
      this.waiter = {
        type,
        settle: (r) => {
          clearTimeout(timer)
          if (r instanceof Error) reject(r)
          else resolve(r)
        }
      }
    })
  }

  /** Sends a command and waits for the child's `ready` report (which carries its CPU and GC time). */
  async command(command: unknown): Promise<R> {
    const ready = this.next("ready" as R["type"])
    this.child.send(command as object)
    return await ready
  }

  /** Lets the child exit by itself (closing IPC), so a profiler in it can write; kills it after 5 s. */
  async stop(): Promise<void> {
    const child = this.child
    if (child.exitCode !== null || child.signalCode !== null) return
    const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()))
    if (child.connected) child.disconnect()
    const timer = setTimeout(() => child.kill("SIGKILL"), 5_000)
    await exited
    clearTimeout(timer)
  }
}
