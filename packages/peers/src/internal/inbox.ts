// Inbound frames from every peer, with a bounded queue per peer drained round-robin. One busy peer
// fills only its own queue: its reader then waits (and its socket pauses), while every other
// peer's frames, and heartbeats, keep moving.
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as FiberId from "effect/FiberId"
import type { InboundFrame, PeerId } from "../PeerManager.js"

interface PeerQueue {
  frames: Array<InboundFrame>
  head: number
  bytes: number
  /** Completed when the queue has room again (a reader waits on it). */
  space: Deferred.Deferred<void> | undefined
}

const sizeOf = (frame: InboundFrame) => {
  let n = 0
  for (const m of frame.messages) n += m.length
  return n
}

export class FairInbox {
  private readonly queues = new Map<PeerId, PeerQueue>()
  /** Peers with frames waiting, in the order they will be served. */
  private ready: Array<PeerId> = []
  private taker: Deferred.Deferred<void> | undefined
  private listener: (() => void) | undefined
  private shutdown = false
  /** Message bytes queued over every peer. */
  private bytes = 0
  /** Peers whose reader waits for room. */
  private readonly waiting = new Set<PeerId>()

  constructor(
    readonly maxFramesPerPeer: number,
    readonly maxBytesPerPeer: number,
    /**
     * Past this many bytes over all peers, a peer that has a frame queued already waits for room (so
     * every peer still gets one frame in, and the total stays within this plus one frame per peer).
     */
    readonly maxBytesTotal: number = Number.POSITIVE_INFINITY
  ) {}

  private queueOf(peer: PeerId): PeerQueue {
    let queue = this.queues.get(peer)
    if (queue === undefined) {
      queue = { frames: [], head: 0, bytes: 0, space: undefined }
      this.queues.set(peer, queue)
    }
    return queue
  }

  /** Whether `peer`'s queue is full: its reader would wait. */
  isFull(peer: PeerId): boolean {
    const queue = this.queues.get(peer)
    if (queue === undefined) return false
    const queued = queue.frames.length - queue.head
    return (
      queued >= this.maxFramesPerPeer ||
      queue.bytes >= this.maxBytesPerPeer ||
      (queued > 0 && this.bytes >= this.maxBytesTotal)
    )
  }

  /** Adds a frame now and returns true, or returns false when the peer's queue is full (or closed). */
  tryOffer(frame: InboundFrame): boolean {
    if (this.shutdown || this.isFull(frame.peer)) return false
    const queue = this.queueOf(frame.peer)
    if (queue.frames.length === queue.head) this.ready.push(frame.peer)
    queue.frames.push(frame)
    const size = sizeOf(frame)
    queue.bytes += size
    this.bytes += size
    const taker = this.taker
    if (taker !== undefined) {
      this.taker = undefined
      Deferred.unsafeDone(taker, Effect.void)
    }
    const listener = this.listener
    if (listener !== undefined) {
      this.listener = undefined
      listener()
    }
    return true
  }

  /** Adds a frame; waits while the peer's queue is full. */
  offer(frame: InboundFrame): Effect.Effect<void> {
    return Effect.suspend(() => {
      if (this.shutdown || this.tryOffer(frame)) return Effect.void
      const queue = this.queueOf(frame.peer)
      queue.space ??= Deferred.unsafeMake<void>(FiberId.none)
      this.waiting.add(frame.peer)
      return Effect.zipRight(Deferred.await(queue.space), this.offer(frame))
    })
  }

  /** Calls `listener` once, at the next frame offered (replacing a listener set before). */
  onReady(listener: () => void): void {
    this.listener = listener
  }

  /** Takes up to `max` frames, one per peer per round, without waiting: none when nothing is queued. */
  poll(max: number): Array<InboundFrame> {
    const out: Array<InboundFrame> = []
    while (out.length < max && this.ready.length > 0) {
      const round = this.ready
      this.ready = []
      for (const peer of round) {
        const queue = this.queues.get(peer)!
        if (out.length >= max) {
          this.ready.push(peer)
          continue
        }
        const frame = queue.frames[queue.head++]!
        const size = sizeOf(frame)
        queue.bytes -= size
        this.bytes -= size
        out.push(frame)
        if (queue.head === queue.frames.length) {
          queue.frames = []
          queue.head = 0
        } else this.ready.push(peer)
        if (queue.space !== undefined && !this.isFull(peer)) {
          const space = queue.space
          queue.space = undefined
          Deferred.unsafeDone(space, Effect.void)
        }
      }
    }
    // Under the total again: every peer that waited may go on (readers waiting for room are few).
    if (this.waiting.size > 0 && this.bytes < this.maxBytesTotal) {
      for (const peer of this.waiting) {
        const queue = this.queues.get(peer)
        if (queue?.space === undefined) {
          this.waiting.delete(peer)
          continue
        }
        if (this.isFull(peer)) continue
        const space = queue.space
        queue.space = undefined
        this.waiting.delete(peer)
        Deferred.unsafeDone(space, Effect.void)
      }
    }
    return out
  }

  /** Takes up to `max` frames, one per peer per round, waiting for at least one. */
  take(max: number): Effect.Effect<Array<InboundFrame>> {
    return Effect.suspend(() => {
      if (this.ready.length === 0) {
        if (this.shutdown) return Effect.never
        this.taker ??= Deferred.unsafeMake<void>(FiberId.none)
        return Effect.zipRight(Deferred.await(this.taker), this.take(max))
      }
      return Effect.succeed(this.poll(max))
    })
  }

  /** Forgets a peer that is gone, once its queue is empty. */
  forget(peer: PeerId): void {
    const queue = this.queues.get(peer)
    if (queue !== undefined && queue.frames.length === queue.head && queue.space === undefined)
      this.queues.delete(peer)
  }

  close(): void {
    this.shutdown = true
    for (const queue of this.queues.values()) {
      if (queue.space !== undefined) Deferred.unsafeDone(queue.space, Effect.void)
    }
  }
}
