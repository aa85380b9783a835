/**
 * The raw node:tls / node:net baselines of the benchmarks: a socket carrying the same frames as our
 * stack, with the same write coalescing (cork, write every frame queued in the turn, uncork; wait
 * for 'drain'), and frames decoded synchronously in the 'data' handler. Framing is passed in (this
 * package depends on nothing), usually `Frame.encode` and `Frame.FrameDecoder` of @hotstuff2/wire.
 */
import * as net from "node:net"
import * as tls from "node:tls"
import { now } from "./Bench.js"

/** Splits a byte stream into frames, as `Frame.FrameDecoder` does: a returned value is an error. */
export interface FrameSplitter<F> {
  readonly push: (chunk: Uint8Array, onFrame: (frame: F) => void) => { readonly _tag: string } | undefined
}

/** Frames written per event-loop turn before yielding, unless told otherwise. */
export const defaultWindow = 512

/**
 * Connects to `host:port` with TLS (`tlsOptions`) or plain TCP, no Nagle; fails after `timeoutMs`.
 * Once connected, socket errors are swallowed: the step running at that time fails through 'close'.
 */
export const connect = (
  kind: "tls" | "tcp",
  address: string,
  tlsOptions: tls.ConnectionOptions,
  timeoutMs: number
): Promise<net.Socket> =>
  new Promise((resolve, reject) => {
    const host = address.slice(0, address.lastIndexOf(":"))
    const port = Number(address.slice(address.lastIndexOf(":") + 1))
    // `noDelay` at connect: `setNoDelay` on a TLS socket that is not connected yet is lost.
    const options: tls.ConnectionOptions & Pick<net.TcpNetConnectOpts, "noDelay"> = {
      host,
      port,
      rejectUnauthorized: false,
      noDelay: true,
      ...tlsOptions
    }
    const socket = kind === "tls" ? tls.connect(options) : net.connect({ host, port, noDelay: true })
    const timer = setTimeout(() => {
      socket.destroy()
      reject(new Error(`raw ${kind}: no connection within ${timeoutMs} ms`))
    }, timeoutMs)
    socket.once("error", (error) => {
      clearTimeout(timer)
      reject(error)
    })
    socket.once(kind === "tls" ? "secureConnect" : "connect", () => {
      clearTimeout(timer)
      socket.on("error", () => {})
      resolve(socket)
    })
  })

/** Resolves on 'drain'; fails if the socket closes first or after `timeoutMs`. */
export const drained = (socket: net.Socket, timeoutMs: number): Promise<void> =>
  new Promise((resolve, reject) => {
    const done = (error?: Error) => {
      clearTimeout(timer)
      socket.off("drain", onDrain)
      socket.off("close", onClose)
      if (error) reject(error)
      else resolve()
    }
    const onDrain = () => done()
    const onClose = () => done(new Error("raw socket closed while blocked"))
    const timer = setTimeout(() => done(new Error("raw socket: no drain in time")), timeoutMs)
    socket.on("drain", onDrain)
    socket.on("close", onClose)
  })

const nextTurn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve))

/**
 * Writes `count` frames made by `frame()` (called once per message, as our stack encodes each): up
 * to `window` per turn, all of one turn in one corked write; when the socket says its buffer is
 * full, waits for 'drain' before the next window. Returns how many corked writes it took.
 */
export const pump = async (
  socket: net.Socket,
  frame: () => Uint8Array,
  count: number,
  options: { readonly window?: number; readonly timeoutMs: number }
): Promise<number> => {
  const window = options.window ?? defaultWindow
  let writes = 0
  for (let sent = 0; sent < count; ) {
    if (socket.destroyed) throw new Error("raw socket closed")
    const end = Math.min(sent + window, count)
    let more = true
    socket.cork()
    for (; sent < end; sent++) more = socket.write(frame())
    socket.uncork()
    writes++
    await (more ? nextTurn() : drained(socket, options.timeoutMs))
  }
  return writes
}

/**
 * Round-trip times (ns) of `n` frames sent one at a time, each answered by one frame from the other
 * side; fails after `timeoutMs` in all.
 */
export const pingPong = <F>(
  socket: net.Socket,
  frame: () => Uint8Array,
  decoder: FrameSplitter<F>,
  n: number,
  timeoutMs: number
): Promise<Float64Array> =>
  new Promise((resolve, reject) => {
    const samples = new Float64Array(n)
    let i = 0
    let sentAt = 0n
    const finish = (error?: Error) => {
      clearTimeout(timer)
      socket.off("data", onData)
      socket.off("close", onClose)
      if (error) reject(error)
      else resolve(samples)
    }
    const ping = () => {
      sentAt = now()
      socket.write(frame())
    }
    const onFrame = () => {
      if (i >= n) return
      samples[i++] = Number(now() - sentAt)
      if (i < n) ping()
      else finish()
    }
    const onData = (chunk: Buffer) => {
      const error = decoder.push(chunk, onFrame)
      if (error !== undefined) finish(new Error(`raw decode: ${error._tag}`))
    }
    const onClose = () => finish(new Error("raw socket closed during ping-pong"))
    const timer = setTimeout(() => finish(new Error("raw ping-pong timed out")), timeoutMs)
    socket.on("data", onData)
    socket.on("close", onClose)
    ping()
  })
