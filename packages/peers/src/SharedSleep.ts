/**
 * Sleeps on Effect's Clock that share one timer per instant: every waiter due at the same instant of
 * the same Clock wakes from one sleep, in the order it went to sleep. Under `TestClock` a simulated
 * cluster then costs one clock step per instant, not one per node; on a real clock a lone waiter
 * costs what `Effect.sleep` does. Used by the heartbeat ticker and the reliable-delivery timer.
 */
import type * as Clock from "effect/Clock"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import type * as Fiber from "effect/Fiber"
import * as FiberId from "effect/FiberId"

// Tick instants shared by every node on one Clock. Each node's ticker sleeping on its own would
// cost a simulated cluster one TestClock step per node per interval (and TestClock sorts all of its
// sleeps and waits for the event loop three times at each step): a hundred nodes started together
// paid a hundred steps per heartbeat interval. Tickers due at the same instant share one sleep
// instead, and wake together in the order they went to sleep; a lone node (a real clock) costs
// what `Effect.sleep` did. Timing is unchanged: each tick still comes `interval` after the last.

interface Instant {
  readonly wakers: Set<() => void>
  fiber: Fiber.RuntimeFiber<void> | undefined
}

const instantsOf = new WeakMap<Clock.Clock, Map<number, Instant>>()

/** Waits until `millis` after now on `clock`, sharing one sleep with every waiter due at that instant. */
export const after = (clock: Clock.Clock, millis: number): Effect.Effect<void> =>
  Effect.async<void>((resume) => {
    let instants = instantsOf.get(clock)
    if (instants === undefined) {
      instants = new Map()
      instantsOf.set(clock, instants)
    }
    const at = clock.unsafeCurrentTimeMillis() + millis
    let instant = instants.get(at)
    if (instant === undefined) {
      const created: Instant = { wakers: new Set(), fiber: undefined }
      instant = created
      instants.set(at, created)
      const wake = () => {
        if (instants.get(at) === created) instants.delete(at)
        for (const waker of created.wakers) waker()
      }
      // A root fiber: it belongs to no node, and any waiter's scope closing must not cut it short
      // for the others. It is interrupted once nobody waits for the instant.
      created.fiber = Effect.runFork(Effect.zipRight(clock.sleep(Duration.millis(millis)), Effect.sync(wake)))
    }
    const waker = () => resume(Effect.void)
    instant.wakers.add(waker)
    const mine = instant
    return Effect.sync(() => {
      mine.wakers.delete(waker)
      if (mine.wakers.size > 0) return
      if (instants.get(at) === mine) instants.delete(at)
      mine.fiber?.unsafeInterruptAsFork(FiberId.none)
    })
  })
