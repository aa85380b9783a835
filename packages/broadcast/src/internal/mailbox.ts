// Where the inbound stream's one consumer takes from: chunks of network deliveries, handed over one
// at a time by a fiber that runs the manager's stream (so a consumer that falls behind holds that
// fiber, and the peers' sockets pause), and this node's own messages (bounded; a full loopback
// refuses at once). It replaces `Stream.merge` of the two, which forks a fiber for every chunk
// pulled from either side: measured, that doubled the round-trip time of a message.
import type * as Cause from "effect/Cause"
import * as Chunk from "effect/Chunk"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as FiberId from "effect/FiberId"
import * as Option from "effect/Option"

export class Mailbox<A> {
  private network: Chunk.Chunk<A> | undefined
  private local: Array<A> = []
  private taker: Deferred.Deferred<void> | undefined
  private space: Deferred.Deferred<void> | undefined
  private failure: Cause.Cause<never> | undefined
  private shutdown = false

  constructor(readonly localCapacity: number) {}

  private wakeTaker(): void {
    const taker = this.taker
    if (taker !== undefined) {
      this.taker = undefined
      Deferred.unsafeDone(taker, Effect.void)
    }
  }

  /** Adds one of this node's own messages; false when `localCapacity` are already waiting. */
  offerLocal(item: A): boolean {
    if (this.shutdown || this.local.length >= this.localCapacity) return false
    this.local.push(item)
    this.wakeTaker()
    return true
  }

  /**
   * Hands over a chunk from the network; waits while the previous one has not been taken. If the
   * offering fiber is interrupted while it waits (its consumer went away), the chunk joins the one
   * waiting, so the next consumer still gets it: the deliveries are already recorded as seen.
   */
  offerNetwork(chunk: Chunk.Chunk<A>): Effect.Effect<void> {
    return Effect.suspend(() => {
      if (this.shutdown || Chunk.isEmpty(chunk)) return Effect.void
      if (this.network !== undefined) {
        this.space ??= Deferred.unsafeMake<void>(FiberId.none)
        return Effect.zipRight(Deferred.await(this.space), this.offerNetwork(chunk)).pipe(
          Effect.onInterrupt(() =>
            Effect.sync(() => {
              if (this.shutdown) return
              this.network = this.network === undefined ? chunk : Chunk.appendAll(this.network, chunk)
            })
          )
        )
      }
      this.network = chunk
      this.wakeTaker()
      return Effect.void
    })
  }

  /** The network side ended with `cause` (a defect): takers fail with it once the mailbox is empty. */
  fail(cause: Cause.Cause<never>): void {
    this.failure ??= cause
    this.wakeTaker()
  }

  /**
   * Everything waiting: own messages first, then the network chunk; waits for at least one. Fails
   * with `None` (the end of the stream) once the mailbox is closed.
   */
  take: Effect.Effect<Chunk.Chunk<A>, Option.Option<never>> = Effect.suspend(() => {
    if (this.shutdown) return Effect.fail(Option.none())
    const network = this.network
    const local = this.local
    if (network === undefined && local.length === 0) {
      if (this.failure !== undefined) return Effect.failCause(this.failure)
      this.taker ??= Deferred.unsafeMake<void>(FiberId.none)
      return Effect.zipRight(Deferred.await(this.taker), this.take)
    }
    let out: Chunk.Chunk<A>
    if (local.length === 0) out = network!
    else {
      this.local = []
      out =
        network === undefined
          ? Chunk.unsafeFromArray(local)
          : Chunk.appendAll(Chunk.unsafeFromArray(local), network)
    }
    if (network !== undefined) {
      this.network = undefined
      const space = this.space
      if (space !== undefined) {
        this.space = undefined
        Deferred.unsafeDone(space, Effect.void)
      }
    }
    return Effect.succeed(out)
  })

  /** Nothing is accepted or handed out any more: the consumer's stream ends. */
  close(): void {
    this.shutdown = true
    this.local = []
    this.network = undefined
    this.wakeTaker()
  }
}
