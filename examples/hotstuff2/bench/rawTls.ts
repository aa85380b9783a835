// The raw node:tls round trip between two processes on 127.0.0.1, measured beside the devnet: a
// 128-byte message framed as the transport frames it, sent to a forked echo process (tlsEcho.ts)
// and answered, one at a time. Neither process is pinned (the validators share both CPUs too).
import { fork } from "node:child_process"
import { fileURLToPath } from "node:url"
import { Bench, type BenchProcess, RawSocket } from "@hotstuff2/testing"
import { Frame, Identity } from "@hotstuff2/wire"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import { tlsMaterial } from "./tlsMaterial.js"

/** Bytes of the message echoed: about a Vote. */
export const RTT_MESSAGE_BYTES = 128
const STEP_TIMEOUT_MS = 30_000
const CHANNEL = 1

export interface RttResult {
  readonly count: number
  readonly p50Us: number
  readonly p99Us: number
}

const reportOf = (child: ReturnType<typeof fork>, type: BenchProcess.Report["type"]) =>
  new Promise<BenchProcess.Report>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`tls echo: no '${type}' in time`)), STEP_TIMEOUT_MS)
    const onMessage = (m: BenchProcess.Report) => {
      if (m.type === "error") reject(new Error(`tls echo: ${m.detail}`))
      else if (m.type !== type) return
      else resolve(m)
      clearTimeout(timer)
      child.off("message", onMessage)
    }
    child.on("message", onMessage)
    child.once("exit", (code) => reject(new Error(`tls echo exited (code ${code})`)))
  })

/** `warmup` round trips, then `count` timed ones; percentiles in microseconds. */
export const measureRtt = async (count = 2_000, warmup = 200): Promise<RttResult> => {
  const here = fileURLToPath(import.meta.url)
  const fromSource = here.endsWith(".ts")
  const child = fork(here.replace(/rawTls\.(ts|js)$/, `tlsEcho.$1`), [], {
    execArgv: fromSource ? ["--import", "tsx", "--conditions=@hotstuff2/source"] : [],
    stdio: ["ignore", 2, 2, "ipc"]
  })
  try {
    const listening = await reportOf(child, "listening")
    if (listening.type !== "listening") throw new Error("expected listening")
    const me = Effect.runSync(Identity.generate)
    const socket = await RawSocket.connect("tls", listening.address, tlsMaterial(me), STEP_TIMEOUT_MS)
    const ready = reportOf(child, "ready")
    child.send({ type: "echo" } satisfies BenchProcess.Command)
    await ready
    const frame = Either.getOrThrow(
      Frame.encode({ channel: CHANNEL, messages: [new Uint8Array(RTT_MESSAGE_BYTES).fill(7)] })
    )
    const ping = (n: number) =>
      RawSocket.pingPong(socket, () => frame, new Frame.FrameDecoder(), n, STEP_TIMEOUT_MS)
    await ping(warmup)
    const samples = await ping(count)
    socket.destroy()
    const summary = Bench.latency([samples])
    return { count, p50Us: summary.p50Us, p99Us: summary.p99Us }
  } finally {
    child.kill("SIGKILL")
  }
}
