/**
 * One contract for "an authenticated pipe of frames to peer X", whatever carries it: TLS 1.3 sockets,
 * plain TCP with a signed handshake, or the simulated network under TestClock.
 */
import type { Frame, Identity, WireError } from "@hotstuff2/wire"
import * as Context from "effect/Context"
import type * as Effect from "effect/Effect"
import type * as Scope from "effect/Scope"
import type * as Stream from "effect/Stream"
import type {
  Backpressure,
  ConnectionClosed,
  DialError,
  HandshakeFailure,
  InboundRefused,
  ListenError,
  UnknownChannel
} from "./TransportError.js"

export type PeerId = Identity.PeerId

/** Who opened the connection. */
export type Direction = "inbound" | "outbound"

/** A frame received on a connection: its channel and its messages (opaque bytes), in order. */
export interface InboundFrame {
  readonly channel: number
  readonly messages: ReadonlyArray<Uint8Array>
  /** It came compressed: what it cost was offered to `unsafeAdmitCompressed` before it was inflated. */
  readonly compressed?: true
}

/** Why a connection closed, and which side closed it. */
export interface CloseReason {
  readonly initiator: "local" | "remote"
  /** A short code: `shutdown`, `duplicate`, `banned`, `unhealthy`, `protocol-error`, `eof`, `error`, ... */
  readonly reason: string
  readonly detail: string
}

export type SendError =
  | Backpressure
  | ConnectionClosed
  | UnknownChannel
  | WireError.FrameTooLarge
  | WireError.DecompressedTooLarge
  | WireError.Malformed

/** Counters of one connection, for metrics and tests. */
export interface ConnectionStats {
  readonly framesSent: number
  readonly bytesSent: number
  readonly framesReceived: number
  readonly bytesReceived: number
  /** Socket writes: fewer than frames sent when writes were coalesced. */
  readonly writes: number
  /** Frames dropped by a channel's overflow policy, per channel id. */
  readonly dropped: Readonly<Record<number, number>>
  /** Frames and bytes waiting in each channel's queue. */
  readonly queued: Readonly<Record<number, { readonly frames: number; readonly bytes: number }>>
  /** Whether the socket is paused because the inbound queue is full. */
  readonly readPaused: boolean
  /**
   * Messages left out of their frame, never sent, because they changed after `send` checked them
   * (a `Frame.Deferred` that no longer verifies: the application modified a message it had sent).
   */
  readonly changedAfterSend: number
}

/** An authenticated connection to one peer. */
export interface Connection {
  /** Unique within this process, for logs and maps. */
  readonly id: number
  readonly localPeer: PeerId
  /** The authenticated remote identity: its key was checked before any frame was read. */
  readonly remotePeer: PeerId
  readonly remoteAddress: string
  readonly direction: Direction
  /**
   * Queues one frame (a batch of messages) on a channel and returns at once; the writer sends
   * queued frames by channel priority, many per socket write, and joins the small frames a channel
   * queued in one turn into one. The messages are read when the frame is built: at the end of the
   * turn, or, when that turn's write filled the socket, once it drains: neither they nor their bytes
   * may change after the call (a `Frame.Deferred` is
   * written then). When the channel's queue is full,
   * fails with `Backpressure` (policy `reject`) or drops and counts (policies `drop-*`) without
   * waiting: a slow peer never blocks the caller. After close, fails with `ConnectionClosed`.
   */
  readonly send: (channel: number, messages: ReadonlyArray<Frame.Outbound>) => Effect.Effect<void, SendError>
  /** `send` outside Effect, for hot loops: queues the frame or returns why not, synchronously. */
  readonly unsafeSend: (channel: number, messages: ReadonlyArray<Frame.Outbound>) => SendError | undefined
  /**
   * Frames from the peer, in order per channel. Pulled: when the consumer falls behind by
   * `maxInboundFrames`, the socket is paused and TCP pushes back on the sender. Ends when the
   * connection closes (after the frames already received).
   */
  readonly frames: Stream.Stream<InboundFrame>
  /**
   * Every frame received so far, waiting for at least one: the cheapest way to consume a connection
   * (one Effect per batch, where a Stream costs a few microseconds per chunk). Fails with
   * `ConnectionClosed` once the connection is closed and every frame received before was taken.
   * One consumer at a time: `frames` is built on it.
   */
  readonly receive: Effect.Effect<ReadonlyArray<InboundFrame>, ConnectionClosed>
  /**
   * For hot loops: hands each frame to `receiver` synchronously, in the socket's data callback, as
   * long as no frame waits for `receive`. A frame the receiver returns false for is queued for
   * `receive`, and so is every frame after it until `receive` is called again with nothing queued
   * (the consumer has handled every frame it took): the order is kept. `undefined` removes it. A
   * receiver that throws is removed, and `receive` dies with the error.
   */
  readonly unsafeReceive: (receiver: ((frame: InboundFrame) => boolean) | undefined) => void
  /**
   * Asked in the socket's data callback before a compressed frame is inflated, with its channel and
   * what it costs (its declared inflated size, or its wire size if larger): false drops the frame
   * uninflated (a rate limit that runs out). `undefined` removes it.
   */
  readonly unsafeAdmitCompressed: (admit: ((channel: number, bytes: number) => boolean) | undefined) => void
  /** Flushes queued frames (up to `closeTimeout`), tells the peer why, and closes. Idempotent. */
  readonly close: (reason?: { readonly reason: string; readonly detail?: string }) => Effect.Effect<void>
  /** Completes once the connection is closed, with why. */
  readonly closed: Effect.Effect<CloseReason>
  readonly stats: Effect.Effect<ConnectionStats>
}

/** Decides at the handshake whether an authenticated peer may connect. */
export type Authorize = (peer: PeerId, remoteAddress: string) => Effect.Effect<boolean>

export interface ListenOptions {
  /** Admission: default admits every authenticated peer of the same network. */
  readonly authorize?: Authorize
  /**
   * Whether an attempt from this remote host may use the `reservedHandshakes` slots: say yes for
   * hosts known to belong to validators, so that a flood of unfinished handshakes from other
   * addresses cannot keep them out. The host is the remote IP as the socket reports it (an
   * IPv4-mapped IPv6 address as plain IPv4), or the simulated network's host name. Default: none.
   */
  readonly reserved?: (host: string) => boolean
}

/** Inbound attempts refused so far, by reason. */
export type RefusalCounts = Readonly<Partial<Record<HandshakeFailure, number>>>

export interface Listener {
  /** The bound address, `host:port` (the real port when asked for port 0). */
  readonly address: string
  /** Authenticated, admitted inbound connections. */
  readonly connections: Stream.Stream<Connection>
  /**
   * Inbound attempts refused, with the typed reason (the newest 256 are kept for a consumer that
   * falls behind; `refused` counts every one).
   */
  readonly refusals: Stream.Stream<InboundRefused>
  /** Every refusal so far, by reason. */
  readonly refused: Effect.Effect<RefusalCounts>
  /** Stops accepting; connections already accepted stay open. */
  readonly close: Effect.Effect<void>
}

export interface TransportShape {
  /** This node's identity. */
  readonly localPeer: PeerId
  /** Listens on `host:port`; the listener closes with the scope. */
  readonly listen: (
    address: string,
    options?: ListenOptions
  ) => Effect.Effect<Listener, ListenError, Scope.Scope>
  /**
   * Connects to `address` and authenticates the remote as `expected` before returning; fails
   * with a typed `DialError` (unreachable, timeout, identity mismatch, refused...) otherwise. The
   * connection lives until closed, or until the transport's layer is released.
   */
  readonly dial: (address: string, expected: Expected) => Effect.Effect<Connection, DialError>
}

/**
 * Who a dial accepts at the other end: one pinned key, or (a bootstrap node whose key is not known,
 * a DNS name that may be any validator) any key the predicate accepts. Either way the remote proves
 * the key it presents (its certificate, or a signed hello) before any application byte; the
 * predicate only decides whether that proven key is welcome. This node's own key never is.
 */
export type Expected = PeerId | ((peer: PeerId) => boolean)

/** Whether a proven key is what a dial expected. */
export const expects = (expected: Expected, peer: PeerId | undefined): boolean => {
  if (peer === undefined) return false
  if (typeof expected === "string") return peer === expected
  // The caller's predicate runs inside a socket callback: a throw is a refusal, never a crash.
  try {
    return expected(peer) === true
  } catch {
    return false
  }
}

/** How a dial's expectation reads in errors and spans: the key, or `any`. */
export const describeExpected = (expected: Expected): string =>
  typeof expected === "string" ? expected : "any"

export class Transport extends Context.Tag("@hotstuff2/transport/Transport")<Transport, TransportShape>() {}

/** Splits `host:port` (IPv6 hosts in brackets); undefined when it is not of that form. */
export const parseAddress = (
  address: string
): { readonly host: string; readonly port: number } | undefined => {
  const match = /^(?:\[([0-9a-fA-F:.]+)\]|([^:[\]]+)):(\d{1,5})$/.exec(address)
  if (!match) return undefined
  const port = Number(match[3])
  if (port > 65535) return undefined
  return { host: match[1] ?? match[2]!, port }
}

export const formatAddress = (host: string, port: number): string =>
  host.includes(":") ? `[${host}]:${port}` : `${host}:${port}`
