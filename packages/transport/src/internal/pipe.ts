// What a connection needs from the thing that moves its bytes: a node:net or node:tls socket, or a
// link of the simulated network. The connection core (connection.ts) and the handshake run on this
// interface only, so every transport shares them.
//
// Contract:
// - `write` hands over chunks in order as one write (the socket's writev, one simulated delivery
//   unit); it returns false when the pipe's outbound buffer is over its high-water mark, and the
//   pipe then calls `handlers.drain` once it can take more. Bytes handed over are never lost while
//   the pipe is open (the simulated network may drop whole writes when asked to model loss).
// - Inbound bytes arrive through `handlers.data`, synchronously, in order, cut anywhere. After
//   `pause()` the pipe delivers no more data until `resume()` (a real socket stops reading, so TCP
//   flow control pushes back on the sender).
// - `handlers.close` is called exactly once, when the pipe is closed by either side or fails; after
//   it, no more `data` or `drain`.
// - `end(onFinished)` closes gracefully after the bytes already written, and calls `onFinished`
//   once they and the close have been handed to the network (a socket's 'finish': in the kernel),
//   or at once when already closed; `destroy()` closes at once.

export interface PipeHandlers {
  data: (chunk: Uint8Array) => void
  drain: () => void
  close: (error?: Error) => void
}

export interface Pipe {
  /** Where the other end is, as `host:port` (IPv6 hosts in brackets). */
  readonly remoteAddress: string
  /** Sets the callbacks; called once, before any data can be delivered. */
  readonly attach: (handlers: PipeHandlers) => void
  readonly write: (chunks: ReadonlyArray<Uint8Array>) => boolean
  readonly pause: () => void
  readonly resume: () => void
  readonly end: (onFinished?: () => void) => void
  readonly destroy: (error?: Error) => void
  /**
   * Optional: the handshake authenticated the remote, and frames up to `maxFrameBytes` (body) are
   * now allowed; before, at most `HANDSHAKE_FRAME_BYTES`. A byte-stream pipe ignores it (the
   * connection's decoder checks every header); a pipe that gathers whole frames before handing
   * them over (one stream per channel, as QUIC) uses it to refuse a large frame on its header
   * instead of buffering it.
   */
  readonly opened?: (maxFrameBytes: number) => void
  /**
   * Optional: whether the pipe, though `write` returned false for a bulk backlog, still takes
   * control and priority-0 frames (votes, heartbeats): it carries channels on streams of their own,
   * and has room for those. The connection then keeps writing them while it waits for `drain`. A
   * byte-stream pipe leaves it unset: everything waits for `drain`.
   */
  readonly takesUrgent?: () => boolean
}

/** Largest frame body before the handshake authenticated the remote (the connection's limit). */
export const HANDSHAKE_FRAME_BYTES = 4096
