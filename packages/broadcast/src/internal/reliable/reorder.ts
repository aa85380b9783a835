// The receiving end of one origin's reliable stream (issue 14): puts the items of an incarnation back
// into sequence order, drops copies, and says what to acknowledge. Pure and synchronous: the caller
// passes Clock millis in and arms its own timer from `gapDeadline`.
//
// Out-of-order items wait in a Map keyed by sequence, with a sorted array of their contiguous runs
// beside it: the lowest run says at once whether the hole at `next` is filled, and the runs are the
// ack's ranges as they stand. An offer costs a Map write and, for an arrival that starts a new run,
// a binary search over the runs; the whole buffer is walked only by a flush (a new incarnation). The
// runs below `low` are spent: dropping the lowest run is an index bump, not a shift of the array.

/** Limits of one reorder stream. */
export interface ReorderConfig {
  /** How far past the next expected sequence an item may be and still be buffered; farther ones are refused, so `buffered` never exceeds it. */
  readonly window: number
  /** How long a hole may hold back buffered items before `expire` gives up on it. */
  readonly gapTimeoutMillis: number
  /** The most buffered runs an ack reports, lowest first. */
  readonly maxRanges: number
}

/** What became of an offered item. */
export type OfferOutcome = "delivered" | "buffered" | "duplicate" | "stale" | "beyond-window"

/** The offered item's outcome, the items now due for delivery in order, and how many sequences were given up on to get there. */
export interface Offered<T> {
  readonly outcome: OfferOutcome
  readonly deliver: ReadonlyArray<T>
  readonly skipped: number
}

/** What the receiver tells the sender: everything up to `cumulative` is delivered or skipped, and `ranges` are buffered. */
export interface AckState {
  readonly incarnation: bigint
  readonly cumulative: bigint
  readonly ranges: ReadonlyArray<{ readonly first: bigint; readonly last: bigint }>
}

interface Run {
  first: bigint
  last: bigint
}

const nothing: ReadonlyArray<never> = []

/**
 * One origin's stream as the receiver sees it. Over the life of an instance the items it hands out
 * are strictly increasing in (incarnation, sequence) and never repeat, whatever order, copies or
 * floors the network brings.
 */
export class ReorderStream<T> {
  private readonly window: bigint
  private current: bigint | undefined = undefined
  private expected = 1n
  private readonly items = new Map<bigint, T>()
  /** Contiguous runs of buffered sequences, ascending, never adjacent, all above `expected` (never buffered). */
  private readonly runs: Array<Run> = []
  /** Index of the lowest run still buffered; the ones before it are spent. */
  private low = 0
  private gapSince: number | undefined = undefined

  constructor(private readonly config: ReorderConfig) {
    this.window = BigInt(config.window)
  }

  /**
   * Takes one item of `incarnation` with its sequence and the sender's floor (it will never send
   * anything below it again). A higher incarnation first flushes what the old one buffered, since
   * the sender that could fill its holes is gone; a lower one is stale. A floor above `next` gives
   * up on the sequences below it before the item itself is considered.
   */
  offer(incarnation: bigint, seq: bigint, floor: bigint, item: T, now: number): Offered<T> {
    if (this.current !== undefined && incarnation < this.current) {
      return { outcome: "stale", deliver: nothing, skipped: 0 }
    }
    const deliver: Array<T> = []
    let skipped = 0n
    if (this.current === undefined || incarnation > this.current) {
      skipped += this.flush(deliver)
      this.current = incarnation
      // Sequences start at 1: a floor below that from a confused sender would only make cumulative negative.
      this.expected = floor > 1n ? floor : 1n
    }
    const before = this.expected
    if (floor > this.expected) skipped += this.advanceTo(floor, deliver)
    let outcome: OfferOutcome
    if (seq < this.expected || this.items.has(seq)) outcome = "duplicate"
    else if (seq === this.expected) {
      deliver.push(item)
      this.expected++
      this.drain(deliver)
      outcome = "delivered"
    } else if (seq - this.expected > this.window) outcome = "beyond-window"
    else {
      this.insert(seq, item)
      outcome = "buffered"
    }
    this.settle(before, now)
    return { outcome, deliver, skipped: Number(skipped) }
  }

  /**
   * Gives up on the hole at `next` once it has held buffered items back for `gapTimeoutMillis`: the
   * sender cancelled those sequences or cannot get them through, and the items behind the hole
   * should not wait for ever. Skips one hole per call; a hole behind it gets a fresh deadline.
   */
  expire(now: number): { readonly deliver: ReadonlyArray<T>; readonly skipped: number } {
    const lowest = this.runs[this.low]
    if (
      lowest === undefined ||
      this.gapSince === undefined ||
      now - this.gapSince < this.config.gapTimeoutMillis
    ) {
      return { deliver: nothing, skipped: 0 }
    }
    const deliver: Array<T> = []
    const skipped = lowest.first - this.expected
    this.expected = lowest.first
    this.drain(deliver)
    this.gapSince = this.low < this.runs.length ? now : undefined
    return { deliver, skipped: Number(skipped) }
  }

  /** The ack to send the origin: undefined until something was offered. */
  ack(): AckState | undefined {
    if (this.current === undefined) return undefined
    const end = Math.min(this.runs.length, this.low + this.config.maxRanges)
    const ranges: Array<{ readonly first: bigint; readonly last: bigint }> = []
    for (let i = this.low; i < end; i++) ranges.push({ first: this.runs[i]!.first, last: this.runs[i]!.last })
    return { incarnation: this.current, cumulative: this.expected - 1n, ranges }
  }

  /** Items waiting behind a hole. */
  get buffered(): number {
    return this.items.size
  }

  /** The incarnation being delivered, undefined until something was offered. */
  get incarnation(): bigint | undefined {
    return this.current
  }

  /** The next sequence to deliver, undefined until something was offered. */
  get next(): bigint | undefined {
    return this.current === undefined ? undefined : this.expected
  }

  /** Clock millis at which expire() would skip the current gap, undefined when nothing is buffered. */
  get gapDeadline(): number | undefined {
    return this.gapSince === undefined ? undefined : this.gapSince + this.config.gapTimeoutMillis
  }

  /** A hole's clock starts when it appears and restarts whenever `next` moves with items still waiting. */
  private settle(before: bigint, now: number): void {
    if (this.low === this.runs.length) this.gapSince = undefined
    else if (this.gapSince === undefined || this.expected !== before) this.gapSince = now
  }

  /** Hands out everything buffered, in order, counting the holes between: the incarnation is over. */
  private flush(out: Array<T>): bigint {
    let skipped = 0n
    for (let i = this.low; i < this.runs.length; i++) {
      const run = this.runs[i]!
      skipped += run.first - this.expected
      this.take(run.first, run.last, out)
      this.expected = run.last + 1n
    }
    this.runs.length = 0
    this.low = 0
    this.gapSince = undefined
    return skipped
  }

  /** Moves `next` up to `floor` (above it), handing out what was buffered below and counting what was not. */
  private advanceTo(floor: bigint, out: Array<T>): bigint {
    let skipped = 0n
    for (let run = this.runs[this.low]; run !== undefined && run.first < floor; run = this.runs[this.low]) {
      skipped += run.first - this.expected
      const end = run.last < floor ? run.last : floor - 1n
      this.take(run.first, end, out)
      this.expected = end + 1n
      if (end === run.last) this.dropLowest()
      else run.first = floor
    }
    skipped += floor - this.expected
    this.expected = floor
    this.drain(out)
    return skipped
  }

  /** Hands out the run that starts at `next`, if there is one (runs are never adjacent: at most one). */
  private drain(out: Array<T>): void {
    const lowest = this.runs[this.low]
    if (lowest === undefined || lowest.first !== this.expected) return
    this.take(lowest.first, lowest.last, out)
    this.expected = lowest.last + 1n
    this.dropLowest()
  }

  private dropLowest(): void {
    this.low++
    if (this.low === this.runs.length) {
      this.runs.length = 0
      this.low = 0
    } else if (this.low >= 64 && this.low * 2 >= this.runs.length) {
      this.runs.splice(0, this.low)
      this.low = 0
    }
  }

  private take(first: bigint, last: bigint, out: Array<T>): void {
    for (let seq = first; seq <= last; seq++) {
      out.push(this.items.get(seq) as T)
      this.items.delete(seq)
    }
  }

  /** Buffers `seq` (above `next`, not yet buffered), extending or joining the runs beside it. */
  private insert(seq: bigint, item: T): void {
    this.items.set(seq, item)
    const runs = this.runs
    // The index of the first run above seq; arrivals in order land past the last run, so check that first.
    let at = runs.length
    if (at > this.low && runs[at - 1]!.last > seq) {
      let low = this.low
      while (low < at) {
        const mid = (low + at) >>> 1
        if (runs[mid]!.first > seq) at = mid
        else low = mid + 1
      }
    }
    const below = at > this.low ? runs[at - 1] : undefined
    const above = at < runs.length ? runs[at] : undefined
    const joinsBelow = below !== undefined && below.last + 1n === seq
    const joinsAbove = above !== undefined && above.first - 1n === seq
    if (joinsBelow && joinsAbove) {
      below.last = above.last
      runs.splice(at, 1)
    } else if (joinsBelow) below.last = seq
    else if (joinsAbove) above.first = seq
    else runs.splice(at, 0, { first: seq, last: seq })
  }
}
