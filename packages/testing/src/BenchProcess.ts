// Two-process benchmarks: the benchmark process pinned to CPU 0, a forked peer pinned to CPU 1 that
// answers commands over IPC with typed reports, every child killed when the benchmark ends, fails,
// is interrupted or passes its deadline.
import { type ChildProcess, fork, spawn } from "node:child_process"
import type * as net from "node:net"
import * as os from "node:os"
import { fileURLToPath } from "node:url"
import { cpuMicros, gcMillis, now, pin } from "./Bench.js"
import type { FrameSplitter } from "./RawSocket.js"

/** Parent to forked peer. */
export type Command =
  /** Count messages from now on and report `done` once `count` have arrived. */
  | { readonly type: "sink"; readonly count: number }
  /** Answer every message (each benchmark says with what). */
  | { readonly type: "echo" }

/** Forked peer to parent; an `error` report fails whoever waits. */
export type Report =
  | { readonly type: "listening"; readonly address: string }
  /** The command was applied: the parent may start sending. CPU and GC time of the peer so far. */
  | { readonly type: "ready"; readonly cpuMicros: number; readonly gcMillis: number }
  /** `at`: monotonic ns (decimal) when the last expected message arrived; `batches`: deliveries. */
  | {
      readonly type: "done"
      readonly at: string
      readonly received: number
      readonly batches: number
      readonly cpuMicros: number
      readonly gcMillis: number
    }
  | { readonly type: "error"; readonly detail: string }

export interface Supervisor {
  readonly log: (text: string) => void
  /** Whether this process got CPU 0 (children then get CPU 1). */
  readonly pinned: boolean
  /**
   * Forks `script` (a file beside `from`, `.ts` under tsx or `.js` compiled, as the caller runs)
   * with an IPC channel, and waits for its first report of type `firstReport`.
   */
  readonly start: (
    from: string,
    script: string,
    args: ReadonlyArray<string>,
    firstReport: Report["type"]
  ) => Promise<{ readonly child: BenchChild; readonly first: Report }>
  /**
   * Starts a busy process (a Node loop that never yields, allocating nothing), pinned to `cpu` when
   * this process is pinned: the "loaded machine" of a benchmark. Killed with the other children.
   * Returns its pid.
   */
  readonly burn: (cpu: number) => number | undefined
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

  const start = async (
    from: string,
    script: string,
    args: ReadonlyArray<string>,
    firstReport: Report["type"]
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
    const child = new BenchChild(`${script} ${args[0] ?? ""}`.trim(), forked, options.stepTimeoutMs)
    const first = await child.next(firstReport)
    if (pinned && forked.pid !== undefined) pin(forked.pid, 1)
    return { child, first }
  }

  const burn = (cpu: number) => {
    const burner = spawn(process.execPath, ["-e", "let x = 0; for (;;) x = (x + 1) | 0"], {
      stdio: "ignore"
    })
    children.add(burner)
    burner.once("exit", () => children.delete(burner))
    if (pinned && burner.pid !== undefined) pin(burner.pid, cpu)
    return burner.pid
  }

  return { log, pinned, start, burn }
}

/** A forked peer and its IPC reports, one awaited at a time. */
export class BenchChild {
  private waiter: { readonly type: Report["type"]; readonly settle: (r: Report | Error) => void } | undefined
  private exited: Error | undefined

  constructor(
    readonly name: string,
    readonly child: ChildProcess,
    readonly stepTimeoutMs: number
  ) {
    child.on("message", (message: Report) => {
      if (message.type === "error") return this.settle(new Error(`${name}: ${message.detail}`))
      if (this.waiter?.type === message.type) this.settle(message)
    })
    child.on("exit", (code, signal) => {
      this.exited = new Error(`${name} exited (code ${code}, signal ${signal})`)
      this.settle(this.exited)
    })
  }

  private settle(result: Report | Error): void {
    const waiter = this.waiter
    this.waiter = undefined
    waiter?.settle(result)
  }

  /** The next report of this type; fails on timeout, on an error report, or when the child exits. */
  next(type: Report["type"], timeoutMs = this.stepTimeoutMs): Promise<Report> {
    if (this.exited !== undefined) return Promise.reject(this.exited)
    if (this.waiter !== undefined) return Promise.reject(new Error(`${this.name}: already waiting`))
    return new Promise<Report>((resolve, reject) => {
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
  async command(command: Command): Promise<Report> {
    const ready = this.next("ready")
    this.child.send(command)
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

/**
 * One timed round against a forked peer: it is told to expect `count` messages, `pump` sends them,
 * and the round lasts from the first send to the peer's receipt of the last (both clocks
 * CLOCK_MONOTONIC). CPU and GC of both processes as fractions of the round show the bottleneck;
 * `perReceive` is the messages the peer took per delivery.
 */
export const timedRound = async <A>(peer: BenchChild, count: number, pump: () => Promise<A>) => {
  const ready = await peer.command({ type: "sink", count })
  const done = peer.next("done")
  const cpuBefore = cpuMicros()
  const gcBefore = gcMillis()
  const start = now()
  const [result, finished] = await Promise.all([pump(), done])
  const senderWall = Number(now() - start)
  if (finished.type !== "done" || ready.type !== "ready") throw new Error("expected ready and done reports")
  const elapsed = Number(BigInt(finished.at) - start)
  const senderMicros = cpuMicros() - cpuBefore
  return {
    result,
    rate: count / (elapsed / 1e9),
    perReceive: count / finished.batches,
    senderCpu: (senderMicros * 1e3) / senderWall,
    /** CPU time (us) each side spent per message over the round. */
    senderCpuUsPerMessage: senderMicros / count,
    receiverCpuUsPerMessage: (finished.cpuMicros - ready.cpuMicros) / count,
    receiverCpu: ((finished.cpuMicros - ready.cpuMicros) * 1e3) / elapsed,
    senderGc: ((gcMillis() - gcBefore) * 1e6) / senderWall,
    receiverGc: ((finished.gcMillis - ready.gcMillis) * 1e6) / elapsed
  }
}

/** The forked peer's side: reports, the parent's last command, and the message count. */
export interface PeerSide {
  readonly send: (report: Report) => void
  /** Reports an error and exits. */
  readonly fail: (detail: string) => never
  /** Whether the parent asked for echoes (read on every delivery). */
  readonly echoing: () => boolean
  /** Counts `n` messages delivered together; reports `done` once the sink's count is reached. */
  readonly count: (n: number) => void
  /**
   * The raw baseline's server, made by `create` with the connection handler it is given: frames
   * are split in the 'data' handler and counted, or each answered with `echo` while the parent asks
   * for echoes. Listens on 127.0.0.1 and reports `listening`.
   */
  readonly serveRaw: <F extends { readonly messages: ReadonlyArray<unknown> }>(
    create: (onSocket: (socket: net.Socket) => void) => net.Server,
    splitter: () => FrameSplitter<F>,
    echo: (socket: net.Socket, frame: F) => void
  ) => void
}

/** Runs in the forked peer: answers commands with `ready`, exits when the parent goes. */
export const peerSide = (): PeerSide => {
  gcMillis() // starts counting
  const send = (report: Report): void => {
    process.send?.(report)
  }
  const fail = (detail: string): never => {
    send({ type: "error", detail })
    process.exit(1)
  }
  const state = { echo: false, target: 0, received: 0, batches: 0 }
  const count = (n: number): void => {
    if (state.target === 0) return
    state.received += n
    state.batches++
    if (state.received >= state.target) {
      send({
        type: "done",
        at: now().toString(),
        received: state.received,
        batches: state.batches,
        cpuMicros: cpuMicros(),
        gcMillis: gcMillis()
      })
      state.target = 0
    }
  }
  process.on("message", (command: Command) => {
    state.echo = command.type === "echo"
    state.received = 0
    state.batches = 0
    state.target = command.type === "sink" ? command.count : 0
    send({ type: "ready", cpuMicros: cpuMicros(), gcMillis: gcMillis() })
  })
  // The parent died or finished: nothing left to do.
  process.on("disconnect", () => process.exit(0))
  const serveRaw: PeerSide["serveRaw"] = (create, splitter, echo) => {
    const server = create((socket) => {
      socket.setNoDelay(true)
      socket.on("error", (error) => fail(`raw socket: ${error.message}`))
      socket.on("close", () => process.exit(0))
      const frames = splitter()
      let messages = 0
      const onFrame = (frame: Parameters<typeof echo>[1]) => {
        if (state.echo) echo(socket, frame)
        else messages += frame.messages.length
      }
      socket.on("data", (chunk: Buffer) => {
        messages = 0
        const error = frames.push(chunk, onFrame)
        if (error !== undefined) fail(`raw decode: ${error._tag}`)
        if (messages > 0) count(messages)
      })
    })
    server.on("error", (error) => fail(`raw server: ${error.message}`))
    server.listen({ host: "127.0.0.1", port: 0 }, () => {
      const address = server.address() as net.AddressInfo
      send({ type: "listening", address: `${address.address}:${address.port}` })
    })
  }
  return { send, fail, echoing: () => state.echo, count, serveRaw }
}
