// A QUIC connection as a Pipe, each channel on a stream of its own. The connection core writes one
// byte sequence of frames (already ordered by priority); this pipe cuts it at frame boundaries (the
// 8-byte header gives channel and length) and appends each frame to its channel's unidirectional
// stream, so that a lost packet of a sync frame delays only the sync stream: QUIC retransmits per
// stream, and quiche sends the streams by urgency (control, then the priority levels). Inbound, each
// stream is gathered into whole frames, handed to the core's decoder one at a time (a frame's bytes
// never interleave with another stream's).
//
// Closing follows TCP's half-close: `end` finishes every data stream, and once the peer has
// acknowledged all of it, finishes the control stream (so a peer that sees the control stream end
// has every frame sent before it); the peer's end is the end of its control stream with all its
// streams read. The QUIC connection is closed once both directions are done, or at once by `destroy`.
import { Frame } from "@hotstuff2/wire"
import { HANDSHAKE_FRAME_BYTES, type Pipe, type PipeHandlers } from "./pipe.js"
import type { DrivenConnection } from "./quicEndpoint.js"

const CONTROL_CHANNEL = 255
const HEADER = Frame.HEADER_BYTES
/**
 * `write` returns false past this many bytes quiche has not taken yet (it takes what its congestion
 * window allows); `drain` under a quarter. Small, because while the pipe is blocked the core holds
 * every frame, a vote too: at 1 MiB a vote behind a sync backlog on a lossy path waited ~50 ms at
 * the median (bench/lossy.ts, 2% loss), at 128 KiB ~14 ms.
 */
const HIGH_WATER = 128 * 1024
const SCRATCH = 64 * 1024
/** quiche urgency of the control stream (0) and the priority-0 channels (1). */
const URGENT = 1
/** Bytes of urgent streams quiche has not taken yet past which urgent frames wait in the connection too. */
const URGENT_WATER = 64 * 1024
/** Frames up to this size are gathered into one buffer allocated on their header. */
const PREALLOCATE = 256 * 1024

interface OutStream {
  readonly id: number
  readonly urgency: number
  readonly pending: Array<Uint8Array>
  finWanted: boolean
  finSent: boolean
}

interface InStream {
  readonly header: Buffer
  headerGot: number
  /** The frame being gathered: one buffer of its size, or (a large one) its parts as they come. */
  frame: Buffer | undefined
  parts: Array<Buffer> | undefined
  frameSize: number
  frameGot: number
  fin: boolean
  broken: boolean
}

export interface QuicPipeOptions {
  readonly role: "client" | "server"
  /** quiche urgency (0 first, 7 last) of a channel's stream. */
  readonly urgencyOf: (channel: number) => number
}

const scratch = Buffer.allocUnsafe(SCRATCH)

export const quicPipe = (driven: DrivenConnection, remoteAddress: string, options: QuicPipeOptions): Pipe => {
  const conn = driven.conn
  // Locally opened unidirectional streams: 2, 6, 10... (client) or 3, 7, 11... (server).
  const localBase = options.role === "client" ? 2 : 3
  const peerControl = options.role === "client" ? 3 : 2
  let handlers: PipeHandlers | undefined
  let handlerClosed = false
  let paused = false
  let blocked = false
  let frameLimit = HANDSHAKE_FRAME_BYTES
  let pendingBytes = 0
  /** Of `pendingBytes`, those of the control and priority-0 streams. */
  let urgentBytes = 0
  let nextIndex = 1
  const out = new Map<number, OutStream>()
  const sending: Array<OutStream> = []
  const inbound = new Map<number, InStream>()
  const ready: Array<Uint8Array> = []
  let ending = false
  let localDone = false
  let remoteDone = false
  const finished: Array<() => void> = []
  // Where the outbound byte sequence is: inside a frame of `channel` with `remaining` bytes to go.
  let channel = CONTROL_CHANNEL
  let remaining = 0
  const header = Buffer.alloc(HEADER)
  let headerGot = 0

  const fail = (error: Error) => {
    if (driven.isClosed) return closeHandlers(error)
    driven.close(1, error.message)
  }

  const closeHandlers = (error?: Error) => {
    if (handlerClosed || handlers === undefined) {
      handlerClosed = true
      return
    }
    handlerClosed = true
    // Frames gathered before the close reach the core first (it queues them while paused).
    for (const frame of ready.splice(0)) handlers.data(frame)
    handlers.close(error)
    for (const listener of finished.splice(0)) listener()
  }

  const streamOf = (ch: number): OutStream => {
    let stream = out.get(ch)
    if (stream !== undefined) return stream
    const index = ch === CONTROL_CHANNEL ? 0 : nextIndex++
    const id = localBase + 4 * index
    stream = {
      id,
      urgency: options.urgencyOf(ch),
      pending: [],
      finWanted: ending && ch !== CONTROL_CHANNEL,
      finSent: false
    }
    try {
      // quiche creates a stream's state on its first send; the priority needs it.
      conn.streamSend(id, new Uint8Array(0), false)
      conn.streamPriority(id, stream.urgency, true)
    } catch {
      // reported by the first real send
    }
    out.set(ch, stream)
    sending.push(stream)
    sending.sort((a, b) => a.urgency - b.urgency)
    return stream
  }

  const enqueue = (ch: number, bytes: Uint8Array) => {
    const stream = streamOf(ch)
    stream.pending.push(bytes)
    pendingBytes += bytes.length
    if (stream.urgency <= URGENT) urgentBytes += bytes.length
  }

  /** Cuts `chunk` at frame boundaries onto the channels' streams. No copy but a split header. */
  const route = (chunk: Uint8Array) => {
    let off = 0
    const length = chunk.length
    while (off < length) {
      if (remaining > 0) {
        const take = Math.min(remaining, length - off)
        enqueue(channel, chunk.subarray(off, off + take))
        remaining -= take
        off += take
        continue
      }
      if (headerGot === 0 && length - off >= HEADER) {
        channel = chunk[off + 1]!
        const body = Buffer.from(chunk.buffer, chunk.byteOffset + off + 4, 4).readUInt32BE(0)
        const take = Math.min(HEADER + body, length - off)
        enqueue(channel, chunk.subarray(off, off + take))
        remaining = HEADER + body - take
        off += take
        continue
      }
      const take = Math.min(HEADER - headerGot, length - off)
      header.set(chunk.subarray(off, off + take), headerGot)
      headerGot += take
      off += take
      if (headerGot === HEADER) {
        headerGot = 0
        channel = header[1]!
        remaining = header.readUInt32BE(4)
        enqueue(channel, Buffer.from(header))
      }
    }
  }

  /** Hands quiche what it can take, most urgent stream first; finishes streams that asked to. */
  const pump = () => {
    for (const stream of sending) {
      const pending = stream.pending
      while (pending.length > 0) {
        const head = pending[0]!
        const sent = conn.streamSend(stream.id, head, false) ?? 0
        pendingBytes -= sent
        if (stream.urgency <= URGENT) urgentBytes -= sent
        if (sent < head.length) {
          pending[0] = head.subarray(sent)
          break
        }
        pending.shift()
      }
      if (pending.length === 0 && stream.finWanted && !stream.finSent) {
        conn.streamSend(stream.id, new Uint8Array(0), true)
        stream.finSent = true
      }
    }
  }

  /** Whether quiche has every byte and the end of a stream acknowledged (it forgets the stream then). */
  const complete = (stream: OutStream): boolean => {
    if (!stream.finSent) return false
    try {
      conn.streamCapacity(stream.id)
      return false
    } catch {
      return true
    }
  }

  const checkEnd = () => {
    if (!ending || localDone) return
    const control = out.get(CONTROL_CHANNEL)
    if (control !== undefined && !control.finWanted) {
      for (const stream of sending) if (stream !== control && !complete(stream)) return
      control.finWanted = true
      pump()
    }
    if (control !== undefined && !complete(control)) return
    localDone = true
    for (const listener of finished.splice(0)) listener()
    if (remoteDone) driven.close(0, "done")
  }

  /** Gathers stream bytes into whole frames; a header over the limit goes to the core alone (it refuses it). */
  const gather = (stream: InStream, bytes: Buffer, length: number) => {
    let off = 0
    while (off < length && !stream.broken) {
      if (stream.frameSize === 0) {
        const take = Math.min(HEADER - stream.headerGot, length - off)
        bytes.copy(stream.header, stream.headerGot, off, off + take)
        stream.headerGot += take
        off += take
        if (stream.headerGot < HEADER) continue
        stream.headerGot = 0
        const body = stream.header.readUInt32BE(4)
        if (body > frameLimit) {
          stream.broken = true
          ready.push(Buffer.from(stream.header))
          return
        }
        if (body === 0) {
          ready.push(Buffer.from(stream.header))
          continue
        }
        stream.frameSize = HEADER + body
        stream.frameGot = HEADER
        // A large frame is kept as the parts that arrived, never allocated on its header's word: a
        // peer announcing 16 MiB frames on every stream must send them to cost that memory.
        if (stream.frameSize <= PREALLOCATE) {
          stream.frame = Buffer.allocUnsafe(stream.frameSize)
          stream.header.copy(stream.frame, 0)
        } else stream.parts = [Buffer.from(stream.header)]
        continue
      }
      const take = Math.min(stream.frameSize - stream.frameGot, length - off)
      if (stream.frame !== undefined) bytes.copy(stream.frame, stream.frameGot, off, off + take)
      else stream.parts!.push(Buffer.from(bytes.subarray(off, off + take)))
      stream.frameGot += take
      off += take
      if (stream.frameGot === stream.frameSize) {
        ready.push(stream.frame ?? Buffer.concat(stream.parts!, stream.frameSize))
        stream.frame = undefined
        stream.parts = undefined
        stream.frameSize = 0
      }
    }
  }

  const deliver = () => {
    while (ready.length > 0 && !paused && !handlerClosed && handlers !== undefined) {
      handlers.data(ready.shift()!)
    }
  }

  const read = () => {
    if (handlers === undefined || handlerClosed) return
    deliver()
    if (paused || ready.length > 0) return
    // Scanning for readable streams costs a native iterator: most calls on a sender have none.
    if (conn.isReadable()) readStreams()
    if (paused || handlerClosed) return
    const control = inbound.get(peerControl)
    if (control?.fin === true && !remoteDone && ready.length === 0 && !conn.isReadable()) {
      for (const stream of inbound.values()) if (!stream.fin) return
      remoteDone = true
      // The peer is done sending: close our side too, as a TCP socket without half-open does.
      end()
      closeHandlers()
      if (localDone) driven.close(0, "done")
    }
  }

  const readStreams = () => {
    for (const id of conn.readable()) {
      let stream = inbound.get(id)
      if (stream === undefined) {
        stream = {
          header: Buffer.alloc(HEADER),
          headerGot: 0,
          frame: undefined,
          parts: undefined,
          frameSize: 0,
          frameGot: 0,
          fin: false,
          broken: false
        }
        inbound.set(id, stream)
      }
      while (!paused && !stream.fin && !stream.broken) {
        let result: [number, boolean] | null
        try {
          result = conn.streamRecv(id, scratch)
        } catch (error) {
          return fail(new Error(`stream ${id}: ${(error as Error).message}`))
        }
        if (result === null) break
        const [length, fin] = result
        gather(stream, scratch, length)
        if (fin) stream.fin = true
        deliver()
        if (handlerClosed) return
      }
      if (paused) return
    }
  }

  const progress = () => {
    read()
    if (handlerClosed && localDone) return
    try {
      pump()
    } catch (error) {
      return fail(error as Error)
    }
    checkEnd()
    if (blocked && pendingBytes < HIGH_WATER / 4) {
      blocked = false
      handlers?.drain()
    }
  }

  driven.events = {
    established: () => {},
    progress,
    closed: (why) => closeHandlers(why === undefined ? undefined : new Error(why))
  }

  function end(onFinished?: () => void) {
    if (onFinished !== undefined) {
      if (localDone || driven.isClosed) queueMicrotask(onFinished)
      else finished.push(onFinished)
    }
    if (ending || driven.isClosed) return
    ending = true
    for (const stream of sending) if (stream.id !== localBase) stream.finWanted = true
    if (out.get(CONTROL_CHANNEL) === undefined) streamOf(CONTROL_CHANNEL)
    try {
      pump()
    } catch (error) {
      return fail(error as Error)
    }
    checkEnd()
    driven.flush()
  }

  return {
    remoteAddress,
    attach: (h) => {
      handlers = h
      if (driven.isClosed) queueMicrotask(() => closeHandlers())
      else queueMicrotask(() => progress())
    },
    write: (chunks) => {
      if (driven.isClosed || ending) return true
      for (const chunk of chunks) route(chunk)
      try {
        pump()
      } catch (error) {
        fail(error as Error)
        return true
      }
      driven.flush()
      if (pendingBytes > HIGH_WATER) blocked = true
      return !blocked
    },
    pause: () => {
      paused = true
    },
    resume: () => {
      if (!paused) return
      paused = false
      // No packet may come to wake the reader (the sender waits for flow-control credit): read now.
      queueMicrotask(() => {
        progress()
        driven.flush()
      })
    },
    end,
    destroy: (error) => {
      if (driven.isClosed) return closeHandlers(error)
      driven.close(1, error?.message ?? "closed")
    },
    opened: (maxFrameBytes) => {
      frameLimit = maxFrameBytes
    },
    // A vote goes to its own stream, ahead of the sync backlog in quiche's scheduling: it need not
    // wait in the connection for that backlog to drain, unless the urgent streams are backed up too
    // (a peer that stopped reading: then the connection's queues fill and answer Backpressure).
    takesUrgent: () => urgentBytes < URGENT_WATER
  }
}
