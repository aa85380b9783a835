// A devnet validator as a child process: forked with an IPC channel, told its setup, followed through
// its reports and its exit, stopped cleanly (or killed after a deadline), or killed with SIGKILL on
// purpose. The devnet runner and the process tests share it.
import { type ChildProcess, fork } from "node:child_process"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Option from "effect/Option"
import type { FromValidator, StatusReport, ToValidator, ValidatorSetup } from "./protocol.js"

/** How a process ended. */
export interface ProcessExit {
  readonly code: number | null
  readonly signal: NodeJS.Signals | null
}

export type ProcessState = "starting" | "running" | "stopping" | "exited" | "failed" | "killed"

export interface ValidatorProcess {
  readonly index: number
  readonly setup: ValidatorSetup
  readonly child: ChildProcess
  /** Succeeds with the PeerId once the validator runs; fails with why it could not start. */
  readonly ready: Deferred.Deferred<string, string>
  readonly exited: Deferred.Deferred<ProcessExit>
  readonly state: () => ProcessState
  /** The newest report and the one before it (rates come from the two). */
  readonly latest: () => StatusReport | undefined
  readonly previous: () => StatusReport | undefined
  /** Every report so far, oldest first (the last `historyLimit`): rates over a chosen window. */
  readonly history: () => ReadonlyArray<StatusReport>
  /** Why it failed (an error it reported, or an exit nobody asked for); undefined while it has not. */
  readonly failure: () => string | undefined
  /** Its last lines of output (stdout and stderr). */
  readonly output: () => ReadonlyArray<string>
  /** Asks it to stop and waits for its exit, at most `timeout`; then SIGKILL. */
  readonly stop: (timeout: Duration.DurationInput) => Effect.Effect<ProcessExit>
  /** SIGKILL, as a crash: no failure. Waits for the exit. */
  readonly kill: Effect.Effect<ProcessExit>
  /** Its exit from now on is expected (a Ctrl-C reached it too): not a failure. */
  readonly expectExit: () => void
}

export interface SpawnOptions {
  /** Each line the process writes, as it comes (the devnet's `--verbose`). */
  readonly onLine?: (index: number, line: string) => void
  /** Called once when the process fails: an error it reported, or an exit nobody asked for. */
  readonly onFailure?: (index: number, reason: string) => void
  /** Lines of output kept for a failure report. Default 40. */
  readonly outputTail?: number
  /** Status reports kept in `history`, newest last. Default 3,600 (an hour at one a second). */
  readonly historyLimit?: number
}

/**
 * The validator entry beside this module: `validator.js` when compiled; `validator.ts` under tsx with
 * the workspace's source condition when this module runs from `src` (tests, `tsx`).
 */
export const validatorEntry = (): { readonly file: string; readonly execArgv: ReadonlyArray<string> } => {
  const here = fileURLToPath(import.meta.url)
  const extension = path.extname(here)
  const file = path.join(path.dirname(here), `validator${extension}`)
  return extension === ".ts"
    ? { file, execArgv: ["--import", "tsx", "--conditions=@hotstuff2/source"] }
    : { file, execArgv: process.execArgv }
}

/** The example package's directory (where `tsx` resolves from). */
const packageDirectory = (): string => {
  const here = path.dirname(fileURLToPath(import.meta.url))
  // src/devnet or dist/src/devnet
  return path.extname(fileURLToPath(import.meta.url)) === ".ts"
    ? path.resolve(here, "../..")
    : path.resolve(here, "../../..")
}

export const spawn = (setup: ValidatorSetup, options: SpawnOptions = {}): Effect.Effect<ValidatorProcess> =>
  Effect.gen(function* () {
    const entry = validatorEntry()
    const child = fork(entry.file, [], {
      cwd: packageDirectory(),
      execArgv: [...entry.execArgv],
      env: { ...process.env, NO_COLOR: "1" },
      stdio: ["ignore", "pipe", "pipe", "ipc"],
      serialization: "advanced"
    })
    const ready = yield* Deferred.make<string, string>()
    const exited = yield* Deferred.make<ProcessExit>()
    const tail = options.outputTail ?? 40
    const output: Array<string> = []
    let state: ProcessState = "starting"
    let latest: StatusReport | undefined
    let previous: StatusReport | undefined
    const history: Array<StatusReport> = []
    const historyLimit = options.historyLimit ?? 3_600
    let failure: string | undefined
    let exit: ProcessExit | undefined
    // Set before a stop or kill we ask for: the exit that follows is not a failure.
    let asked = false

    const fail = (reason: string) => {
      if (failure !== undefined) return
      failure = reason
      state = "failed"
      Deferred.unsafeDone(ready, Exit.fail(reason))
      options.onFailure?.(setup.index, reason)
    }

    let partial = { stdout: "", stderr: "" }
    const keep = (stream: "stdout" | "stderr") => (chunk: Buffer) => {
      const lines = (partial[stream] + chunk.toString("utf8")).split("\n")
      partial = { ...partial, [stream]: lines.pop() ?? "" }
      for (const line of lines) {
        if (line.trim() === "") continue
        output.push(line)
        if (output.length > tail) output.shift()
        options.onLine?.(setup.index, line)
      }
    }
    child.stdout?.on("data", keep("stdout"))
    child.stderr?.on("data", keep("stderr"))
    child.on("message", (m: FromValidator) => {
      switch (m.type) {
        case "ready":
          if (state === "starting") state = "running"
          Deferred.unsafeDone(ready, Exit.succeed(m.peerId))
          return
        case "status":
          previous = latest
          latest = m.report
          history.push(m.report)
          if (history.length > historyLimit) history.shift()
          return
        case "failed":
          fail(m.message)
          return
      }
    })
    child.on("error", (e) => {
      // Telling a process that has just exited to stop fails; its exit is judged below.
      if (!asked) fail(e.message)
    })
    child.on("exit", (code, signal) => {
      exit = { code, signal }
      if (!asked) fail(`exited unasked (${signal ?? `code ${code}`})`)
      else if (state !== "failed" && state !== "killed") {
        if (code !== 0 && signal !== "SIGKILL") fail(`exited with ${signal ?? `code ${code}`} while stopping`)
        else state = "exited"
      }
      Deferred.unsafeDone(ready, Exit.fail(failure ?? "exited before it was ready"))
      Deferred.unsafeDone(exited, Exit.succeed(exit))
    })
    child.send({ type: "start", setup } satisfies ToValidator)

    const kill = Effect.suspend(() => {
      if (exit !== undefined) return Effect.succeed(exit)
      asked = true
      if (state !== "failed") state = "killed"
      child.kill("SIGKILL")
      return Deferred.await(exited)
    })

    const stop = (timeout: Duration.DurationInput) =>
      Effect.gen(function* () {
        if (exit !== undefined) return exit
        asked = true
        if (state !== "failed" && state !== "killed") state = "stopping"
        try {
          if (child.connected) child.send({ type: "stop" } satisfies ToValidator)
        } catch {
          // already gone: the exit event follows
        }
        // Interruptible: this runs in finalizers, where a timeout could not otherwise cut the wait.
        const done = yield* Deferred.await(exited).pipe(
          Effect.interruptible,
          Effect.timeout(timeout),
          Effect.option
        )
        if (Option.isSome(done)) return done.value
        fail(
          `did not exit within ${Duration.format(Duration.decode(timeout))} of being asked to stop; killed`
        )
        child.kill("SIGKILL")
        return yield* Deferred.await(exited)
      })

    return {
      index: setup.index,
      setup,
      child,
      ready,
      exited,
      state: () => state,
      latest: () => latest,
      previous: () => previous,
      history: () => history,
      failure: () => failure,
      output: () => output,
      stop,
      kill,
      expectExit: () => {
        asked = true
      }
    } satisfies ValidatorProcess
  })
