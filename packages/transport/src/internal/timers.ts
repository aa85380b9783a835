// Many timers on one Clock sleep: a min-heap of deadlines and a fiber sleeping until the earliest.
// A node has a timer per handshake and per closing connection; one `Effect.sleep` each would put
// thousands of sleeps on the Clock at once, and TestClock re-sorts all of its sleeps at every step
// (a 100-node mesh spent most of its time there). With this, pending Clock sleeps stay at about one.
import * as Clock from "effect/Clock"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as FiberSet from "effect/FiberSet"
import type * as Scope from "effect/Scope"

/** Schedules `f` after `millis` on the Clock; returns a cancel function. */
export type Timers = (millis: number, f: () => void) => () => void

interface Entry {
  readonly at: number
  readonly seq: number
  /** Dropped on cancel: a cancelled entry waits in the heap until its time, holding nothing. */
  f: (() => void) | undefined
  cancelled: boolean
}

const before = (a: Entry, b: Entry) => a.at < b.at || (a.at === b.at && a.seq < b.seq)

class Heap {
  readonly items: Array<Entry> = []

  push(entry: Entry): void {
    const items = this.items
    items.push(entry)
    let i = items.length - 1
    while (i > 0) {
      const parent = (i - 1) >> 1
      if (!before(items[i]!, items[parent]!)) break
      ;[items[i], items[parent]] = [items[parent]!, items[i]!]
      i = parent
    }
  }

  pop(): Entry | undefined {
    const items = this.items
    const top = items[0]
    const last = items.pop()
    if (items.length > 0 && last !== undefined) {
      items[0] = last
      let i = 0
      for (;;) {
        const l = 2 * i + 1
        const r = l + 1
        let m = i
        if (l < items.length && before(items[l]!, items[m]!)) m = l
        if (r < items.length && before(items[r]!, items[m]!)) m = r
        if (m === i) break
        ;[items[i], items[m]] = [items[m]!, items[i]!]
        i = m
      }
    }
    return top
  }
}

/** A timer queue living in the current scope: closing it drops every pending timer. */
export const make: Effect.Effect<Timers, never, Scope.Scope> = Effect.gen(function* () {
  // Captured in an interruptible region even when the caller is not (an acquireRelease acquire):
  // otherwise every timer fiber would inherit uninterruptibility, and closing the scope would wait
  // for each to fire.
  const run = yield* Effect.interruptible(FiberSet.makeRuntime<never>())
  const clock = yield* Effect.clock
  const heap = new Heap()
  const wakes = new Set<number>()
  let seq = 0

  const fire = (wake: number) => {
    wakes.delete(wake)
    const now = clock.unsafeCurrentTimeMillis()
    while (heap.items.length > 0 && heap.items[0]!.at <= now) {
      const entry = heap.pop()!
      if (!entry.cancelled) entry.f?.()
    }
    schedule()
  }

  const schedule = () => {
    while (heap.items.length > 0 && heap.items[0]!.cancelled) heap.pop()
    if (heap.items.length === 0) return
    const earliest = heap.items[0]!.at
    for (const wake of wakes) if (wake <= earliest) return
    wakes.add(earliest)
    run(
      Effect.flatMap(Clock.currentTimeMillis, (now) =>
        Effect.zipRight(
          Effect.sleep(Duration.millis(Math.max(0, earliest - now))),
          Effect.sync(() => fire(earliest))
        )
      )
    )
  }

  return (millis, f) => {
    const entry: Entry = {
      at: clock.unsafeCurrentTimeMillis() + Math.max(0, millis),
      seq: seq++,
      f,
      cancelled: false
    }
    heap.push(entry)
    schedule()
    return () => {
      entry.cancelled = true
      entry.f = undefined
    }
  }
})

/** Fails with `error()` after `millis` unless `effect` completes first. */
export const deadline =
  <E2>(timers: Timers, millis: number, error: () => E2) =>
  <A, E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<A, E | E2, R> =>
    Effect.raceFirst(
      effect,
      Effect.async<never, E2>((resume) => {
        const cancel = timers(millis, () => resume(Effect.fail(error())))
        return Effect.sync(cancel)
      })
    )
