// The `inbound` stream: its one consumer takes straight from the manager's inbox and handles each
// chunk of frames in its own fiber (one fiber hand-off per received message: from the connection's
// data callback, where the manager queues a frame, to the consumer). This node's own messages
// (loopback) wait here, bounded, and go out before the network's.
import type { PeerManager } from "@hotstuff2/peers"
import * as EffectChannel from "effect/Channel"
import * as Chunk from "effect/Chunk"
import * as Effect from "effect/Effect"
import type * as Fiber from "effect/Fiber"
import * as Option from "effect/Option"
import * as Stream from "effect/Stream"
import type { BroadcasterShape, Delivery } from "../Broadcaster.js"

const MAX_FRAMES = 256

export const makeStream = (deps: {
  readonly manager: PeerManager.PeerManagerShape
  readonly loopbackBuffer: number
  /** The deliveries of a chunk of frames, after `before` (see `inbound.ts`). */
  readonly handleFrames: (
    frames: ReadonlyArray<PeerManager.InboundFrame>,
    before: Array<Delivery>
  ) => Array<Delivery> | Effect.Effect<Array<Delivery>>
  /** The consumer asks for a chunk: it is done with the one before (reliable acks). */
  readonly onPull: () => void
}) =>
  Effect.gen(function* () {
    const { manager, handleFrames } = deps
    let local: Array<Delivery> = []
    // The waiting consumer's callback, and what it resumes into: `pull` for the stream, the next
    // `receive` step for `receive` (no closure per wait).
    type Next = Effect.Effect<Chunk.Chunk<Delivery>, Option.Option<never>>
    let resume: ((effect: Next) => void) | undefined
    let resumeInto: Next | undefined
    let closed = false
    /** Resumes a waiting consumer straight into its next step. */
    const wake = () => {
      const r = resume
      if (r !== undefined) {
        resume = undefined
        r(resumeInto!)
      }
    }
    yield* Effect.addFinalizer(() =>
      Effect.sync(() => {
        closed = true
        local = []
        wake()
      })
    )

    /**
     * Hands deliveries made outside a chunk of frames (reliable messages a gap held back) to the
     * consumer, ahead of the network's next ones. Bounded by the reorder window that held them.
     */
    const inject = (deliveries: ReadonlyArray<Delivery>): void => {
      if (closed || deliveries.length === 0) return
      for (const d of deliveries) local.push(d)
      wake()
    }

    /** Hands this node's own message to the consumer; false when the buffer is full or closed. */
    const loopback = (delivery: Delivery): boolean => {
      if (closed || local.length >= deps.loopbackBuffer) return false
      local.push(delivery)
      wake()
      return true
    }

    // Effect.async rather than a Deferred: `Deferred.unsafeMake` copies a prototype into a fresh
    // object, about 2 us, once per wait. No canceler, so no interruption handler is built per wait:
    // the callback of an interrupted wait may be called later, and the fiber runtime ignores that.
    const waitThenPull = Effect.async<Chunk.Chunk<Delivery>, Option.Option<never>>((callback) => {
      resume = callback
      resumeInto = pull
      manager.unsafeOnInbound(wake)
    })

    /**
     * The next chunk for the consumer: own messages first, then the network's; `wait` when there is
     * none, `ended` once the broadcaster closed.
     */
    const take = <E>(
      wait: Effect.Effect<Chunk.Chunk<Delivery>, E>,
      ended: Effect.Effect<never, E>
    ): Effect.Effect<Chunk.Chunk<Delivery>, E> => {
      const self: Effect.Effect<Chunk.Chunk<Delivery>, E> = Effect.suspend(
        (): Effect.Effect<Chunk.Chunk<Delivery>, E> => {
          deps.onPull()
          for (;;) {
            if (closed) return ended
            const frames = manager.unsafePoll(MAX_FRAMES)
            if (frames.length === 0 && local.length === 0) return wait
            let before: Array<Delivery> = []
            if (local.length > 0) {
              before = local
              local = []
            }
            const handled = handleFrames(frames, before)
            if (!Array.isArray(handled)) {
              return Effect.flatMap(handled, (out) =>
                out.length === 0 ? self : Effect.succeed(Chunk.unsafeFromArray(out))
              )
            }
            // All duplicates or refused: look again rather than hand out an empty chunk.
            if (handled.length > 0) return Effect.succeed(Chunk.unsafeFromArray(handled))
          }
        }
      )
      return self
    }
    const pull: Effect.Effect<Chunk.Chunk<Delivery>, Option.Option<never>> = take(
      waitThenPull,
      Effect.fail(Option.none())
    )

    let consumers = 0
    /**
     * The fiber whose `receive` waits now: it has the consumer's place while it runs. Nothing clears
     * it when that wait is interrupted: an interrupted fiber is done, which `receiverWaits` sees.
     */
    let waiter: Fiber.RuntimeFiber<unknown, unknown> | undefined
    const receiverWaits = () => waiter !== undefined && waiter.unsafePoll() === null
    const oneConsumer = () =>
      Effect.dieMessage(
        "Broadcaster.inbound (NodeNetwork.messages) has one consumer, and one is running already"
      )
    // Resumed by `wake` into `afterWait`, as the stream's wait is into `pull`; no canceler, no
    // finalizer per wait (see `waitThenPull`).
    let afterWait: Effect.Effect<Chunk.Chunk<Delivery>>
    const waitingReceive: Effect.Effect<Chunk.Chunk<Delivery>> = Effect.withFiberRuntime((fiber) => {
      waiter = fiber
      return Effect.async<Chunk.Chunk<Delivery>>((callback) => {
        // Resumed into `afterWait` only, which cannot fail: the wider type is never used.
        resume = callback as (effect: Next) => void
        resumeInto = afterWait
        manager.unsafeOnInbound(wake)
      })
    })
    const takeNow = take(waitingReceive, Effect.interrupt)
    afterWait = Effect.suspend(() => {
      waiter = undefined
      return takeNow
    })
    /**
     * The next chunk without a stream around it: a chunk already there is handed over in the
     * caller's step, and a wait is one resume of the caller. The same queue and consumer's place as
     * `inbound`. Once the broadcaster closed, the caller is interrupted (as by `Queue.take`).
     */
    const receive: Effect.Effect<Chunk.Chunk<Delivery>> = Effect.suspend(() =>
      consumers > 0 || receiverWaits() ? oneConsumer() : takeNow
    )

    // The stream is a plain channel loop over `pull` (Stream.repeatEffectChunkOption and
    // Stream.unwrapScoped wrap every chunk in several more Effect and channel steps).
    const pullOrEnd: Effect.Effect<Chunk.Chunk<Delivery> | undefined> = Effect.catchAll(pull, () =>
      Effect.succeed(undefined)
    )
    let loop: EffectChannel.Channel<Chunk.Chunk<Delivery>, unknown, never, unknown, void, unknown>
    const next = EffectChannel.suspend(() => loop)
    loop = EffectChannel.flatMap(EffectChannel.fromEffect(pullOrEnd), (chunk) =>
      chunk === undefined ? EffectChannel.void : EffectChannel.zipRight(EffectChannel.write(chunk), next)
    )
    const inbound: BroadcasterShape["inbound"] = Stream.suspend(() => {
      // One consumer at a time: this run counts as one from its first pull to its end.
      let counted = false
      const first = EffectChannel.fromEffect(
        Effect.suspend(() => {
          if (consumers > 0 || receiverWaits()) return oneConsumer()
          consumers++
          counted = true
          return Effect.void
        })
      )
      return Stream.fromChannel(EffectChannel.zipRight(first, loop)).pipe(
        Stream.ensuring(
          Effect.sync(() => {
            if (counted) consumers--
          })
        )
      )
    })

    return { inbound, receive, loopback, inject }
  })
