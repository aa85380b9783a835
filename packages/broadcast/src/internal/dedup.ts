// Duplicate detection by envelope id, which is a function of (origin, sequence): a window of recent
// sequence numbers per origin. Memory is bounded by `window` per origin and `maxOrigins` origins.

interface OriginWindow {
  highest: bigint
  seen: Set<bigint>
}

export class Dedup {
  private readonly origins = new Map<string, OriginWindow>()
  private readonly window: bigint

  constructor(
    window: number,
    private readonly maxOrigins: number
  ) {
    this.window = BigInt(window)
  }

  /** True the first time (origin, sequence) is seen within the window; false for a duplicate or one too old. */
  admit(origin: string, sequence: bigint): boolean {
    let w = this.origins.get(origin)
    if (w === undefined) {
      w = { highest: sequence, seen: new Set([sequence]) }
      this.origins.set(origin, w)
      if (this.origins.size > this.maxOrigins) {
        // Maps iterate in insertion order, and an origin is re-inserted when heard: the first is the least recent.
        const oldest = this.origins.keys().next().value as string
        this.origins.delete(oldest)
      }
      return true
    }
    this.origins.delete(origin)
    this.origins.set(origin, w)
    if (sequence <= w.highest - this.window || w.seen.has(sequence)) return false
    w.seen.add(sequence)
    if (sequence > w.highest) {
      w.highest = sequence
      if (w.seen.size > Number(this.window) * 2) {
        const floor = w.highest - this.window
        for (const s of w.seen) if (s <= floor) w.seen.delete(s)
      }
    }
    return true
  }

  get size(): number {
    return this.origins.size
  }
}
