// How many dials a node runs at once: a congestion window over its own handshakes, as TCP keeps one
// over its segments. It starts at `maxConcurrentDials`. A dial that took longer than
// `slowDialAfter`, or timed out, says the node (its CPU, or the path) is congested: the window
// halves, at most once per round of dials (dials that started before the last halving ran in the
// window that was halved for them), and grows back by one per window of fast dials. A node whose
// handshakes slow down runs fewer at once instead of running them into the transport's
// `handshakeTimeout`, where their work is lost and done again, making the next ones slower still: a
// whole network starting on busy machines (or many validators in one process) would otherwise
// collapse into timeouts. A node whose dials stay fast keeps `maxConcurrentDials`.
//
// Plain numbers, no Effect: the dialer reads the Clock and resizes its dial semaphore to `permits`.

export class DialWindow {
  /** Fractional: each fast dial adds 1/size, so a window of fast dials adds one. */
  private size: number
  /** Monotonic millis of the last halving. */
  private halvedAt = Number.NEGATIVE_INFINITY

  constructor(
    private readonly max: number,
    private readonly slowMillis: number
  ) {
    this.size = max
  }

  /** Dials that may run at once now: 1 to `maxConcurrentDials`. */
  get permits(): number {
    return Math.max(1, Math.min(this.max, Math.floor(this.size)))
  }

  /**
   * A dial started at `startedAt` ended at `at` (monotonic millis): it succeeded, or it timed out
   * (`timedOut`; other failures, such as a refused port, say nothing of congestion and are not
   * reported). Returns whether `permits` changed.
   */
  ended(startedAt: number, at: number, timedOut: boolean): boolean {
    const before = this.permits
    if (timedOut || at - startedAt > this.slowMillis) {
      if (startedAt < this.halvedAt) return false
      this.size = Math.max(1, this.size / 2)
      this.halvedAt = at
    } else {
      this.size = Math.min(this.max, this.size + 1 / this.size)
    }
    return this.permits !== before
  }
}
