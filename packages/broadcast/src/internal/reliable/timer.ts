// The reliable layer's one timer per node, on Effect's Clock. It sleeps until the earliest deadline
// either side asked for (an ack owed, a retransmission due, a gap to give up, a blocked queue to
// try again), rounded up to the tick so that work due close together is done in one pass, and stops
// when a pass leaves nothing to wait for. A request for an earlier deadline starts a new sleep; the
// one it replaces wakes to find itself stale and ends. Sleeps are shared per instant between the
// nodes of one Clock (a simulated cluster steps once per instant, not once per node).
import { SharedSleep } from "@hotstuff2/peers"
import * as Effect from "effect/Effect"
import type { Core } from "../core.js"

export interface Timer {
  /** Asks for a pass at `at` (Clock millis) or earlier. */
  readonly wake: (at: number) => void
}

/** `pass(now)` does what is due and returns the next deadline, if any. */
export const makeTimer = (
  core: Core,
  tickMillis: number,
  pass: (now: number) => number | undefined
): Timer => {
  let wakeAt = Number.POSITIVE_INFINITY
  let generation = 0

  const run = (mine: number): Effect.Effect<void> =>
    Effect.sync(() => {
      if (mine !== generation) return // replaced by an earlier wake
      wakeAt = Number.POSITIVE_INFINITY
      const next = pass(core.now())
      if (next !== undefined) wake(next)
    })

  const wake = (at: number): void => {
    const now = core.now()
    const rounded = Math.max(now + 1, Math.ceil(at / tickMillis) * tickMillis)
    if (rounded >= wakeAt) return
    wakeAt = rounded
    const mine = ++generation
    // One sleep per instant for every node on this Clock (rounded instants line up across nodes).
    core.fork(
      Effect.zipRight(
        Effect.clockWith((clock) => SharedSleep.after(clock, rounded - now)),
        run(mine)
      )
    )
  }

  return { wake }
}
