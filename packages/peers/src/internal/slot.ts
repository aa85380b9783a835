// One slot per peer holds its connection (at most one), its heartbeat state, its redial schedule, its
// inbound token buckets (kept across reconnects) and what the connection budget knows of its use. Slots are plain objects changed in synchronous
// steps (no yield between a read and its write), so each change is atomic on the event loop. Each
// job's module (dialer, heartbeat, rate limits, reader) keeps its own fields here.
import type { Transport } from "@hotstuff2/transport"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as FiberId from "effect/FiberId"
import type * as Schedule from "effect/Schedule"
import type { Bucket } from "./rateLimit.js"

export interface Slot {
  connection: Transport.Connection | undefined
  /** Monotonic millis when `connection` was set (or cleared). */
  connectedAt: number
  /** Completed (and replaced) whenever `connection` changes. */
  changed: Deferred.Deferred<void>
  /** Fibers waiting in `send` for this peer's connection. */
  waiting: number
  pingNonce: bigint
  /** Pings not yet answered: nonce to monotonic millis sent (at most `missedHeartbeats` kept). */
  pings: Map<bigint, number>
  /** Heartbeat ticks in a row with a ping unanswered and nothing heard from the peer. */
  missed: number
  /**
   * Something arrived from the peer (any frame, its pings included) since the last heartbeat tick.
   * A flag, not a time: the hot paths write it without reading the Clock; the ticker reads and clears it.
   */
  heard: boolean
  /** Monotonic millis of the last ping sent (or of the connection, before the first). */
  lastPingAt: number
  /** This node's reader waits on this node's own consumer: silence from the peer is not its fault. */
  readerBlocked: boolean
  /** Per channel, kept across reconnects so that reconnecting does not refill them. */
  buckets: Map<number, { messages: Bucket; bytes: Bucket }>
  lastRateReport: number
  dropped: number
  /** A compressed frame was dropped over the rate limit before inflation: the reader reports it. */
  compressedDropped: boolean
  /** Monotonic millis of the last `registry.touch`: at most one per heartbeat interval. */
  touchedAt: number
  /** What this peer's dialer fiber does now; "none" while there is none (connected, or not dialled). */
  dialer: "none" | "waiting" | "dialing"
  /** The redial schedule, kept across connections (made by the first dialer). */
  backoff: Schedule.ScheduleDriver<unknown, unknown, never> | undefined
  /** Completed (and replaced) when the registry learns an address of this peer: a dialer with none waits on it. */
  addressed: Deferred.Deferred<void>
  /**
   * Application data was sent or received since the budget's last pass (heartbeats do not count).
   * A flag, not a time: the hot paths write it without reading the Clock; the pass turns it into
   * `lastUsedAt`.
   */
  used: boolean
  /** Monotonic millis when the budget's pass last found the connection used (or when it was made). */
  lastUsedAt: number
  /** Monotonic millis of the last send that found the peer not connected: budget mode dials it on demand. */
  demandedAt: number
}

/** A slot with no connection, made at monotonic millis `at`. */
export const makeSlot = (at: number): Slot => ({
  connection: undefined,
  connectedAt: at,
  changed: Deferred.unsafeMake<void>(FiberId.none),
  waiting: 0,
  pingNonce: 0n,
  pings: new Map(),
  missed: 0,
  heard: false,
  lastPingAt: Number.NEGATIVE_INFINITY,
  readerBlocked: false,
  buckets: new Map(),
  lastRateReport: Number.NEGATIVE_INFINITY,
  dropped: 0,
  compressedDropped: false,
  touchedAt: Number.NEGATIVE_INFINITY,
  dialer: "none",
  backoff: undefined,
  addressed: Deferred.unsafeMake<void>(FiberId.none),
  used: false,
  lastUsedAt: at,
  demandedAt: Number.NEGATIVE_INFINITY
})

/** The registry learned an address of this slot's peer: a dialer waiting for one goes on. */
export const addressDiscovered = (slot: Slot) => {
  const addressed = slot.addressed
  slot.addressed = Deferred.unsafeMake<void>(FiberId.none)
  Deferred.unsafeDone(addressed, Effect.void)
}

/**
 * Sets (or clears) the slot's connection at monotonic millis `at`: the heartbeat starts over, a new
 * connection counts as just used (it is not trimmed before it could be), and whoever waits for a
 * change (`send` with `waitForConnection`) wakes up.
 */
export const setConnection = (slot: Slot, connection: Transport.Connection | undefined, at: number) => {
  slot.connection = connection
  slot.connectedAt = at
  if (connection !== undefined) {
    slot.used = false
    slot.lastUsedAt = at
  }
  slot.missed = 0
  slot.heard = false
  slot.lastPingAt = slot.connectedAt
  slot.pings = new Map()
  slot.readerBlocked = false
  const changed = slot.changed
  slot.changed = Deferred.unsafeMake<void>(FiberId.none)
  Deferred.unsafeDone(changed, Effect.void)
}
