// Duplicate detection by envelope id, which is a function of (origin, sequence): per origin, the
// highest sequence seen and a ring of `window` bits for the sequences just below it (512 bytes for
// the default window). Validators' windows are kept for good; other origins (admitted with
// `admitNonValidators`) share `maxOrigins` slots, the least recently heard forgotten first.

class OriginWindow {
  readonly bits: Uint8Array
  constructor(
    public highest: bigint,
    readonly size: bigint
  ) {
    this.bits = new Uint8Array(Math.ceil(Number(size) / 8))
    this.set(highest)
  }
  private index(sequence: bigint): number {
    return Number(sequence % this.size)
  }
  has(sequence: bigint): boolean {
    const i = this.index(sequence)
    return (this.bits[i >> 3]! & (1 << (i & 7))) !== 0
  }
  set(sequence: bigint): void {
    const i = this.index(sequence)
    this.bits[i >> 3]! |= 1 << (i & 7)
  }
  private clear(sequence: bigint): void {
    const i = this.index(sequence)
    this.bits[i >> 3]! &= ~(1 << (i & 7))
  }
  /** Moves the top to `sequence`, forgetting the slots that now stand for newer sequences. */
  advance(sequence: bigint): void {
    if (sequence - this.highest >= this.size) this.bits.fill(0)
    else for (let s = this.highest + 1n; s <= sequence; s++) this.clear(s)
    this.highest = sequence
    this.set(sequence)
  }
}

export class Dedup {
  private readonly pinned = new Map<string, OriginWindow>()
  private readonly others = new Map<string, OriginWindow>()
  private readonly window: bigint

  /**
   * @param isPinned origins whose windows are never forgotten (the validators): a flood of other
   *   origins cannot evict them and so replay their messages.
   */
  constructor(
    window: number,
    private readonly maxOrigins: number,
    private readonly isPinned: (origin: string) => boolean = () => false
  ) {
    this.window = BigInt(window)
  }

  private windowOf(origin: string, touch: boolean): OriginWindow | undefined {
    const w = this.pinned.get(origin)
    if (w !== undefined) return w
    const other = this.others.get(origin)
    if (other !== undefined && touch) {
      // Maps iterate in insertion order: re-inserting keeps the least recently heard first.
      this.others.delete(origin)
      this.others.set(origin, other)
    }
    return other
  }

  /** True when (origin, sequence) was admitted before, or is older than the window: no need to verify it. */
  seen(origin: string, sequence: bigint): boolean {
    const w = this.windowOf(origin, false)
    if (w === undefined || sequence > w.highest) return false
    return sequence <= w.highest - this.window || w.has(sequence)
  }

  /** Records (origin, sequence); true the first time, false for a duplicate or one too old. */
  admit(origin: string, sequence: bigint): boolean {
    const w = this.windowOf(origin, true)
    if (w === undefined) {
      const fresh = new OriginWindow(sequence, this.window)
      if (this.isPinned(origin)) this.pinned.set(origin, fresh)
      else {
        this.others.set(origin, fresh)
        if (this.others.size > this.maxOrigins) this.others.delete(this.others.keys().next().value as string)
      }
      return true
    }
    if (sequence > w.highest) {
      w.advance(sequence)
      return true
    }
    if (sequence <= w.highest - this.window || w.has(sequence)) return false
    w.set(sequence)
    return true
  }

  get size(): number {
    return this.pinned.size + this.others.size
  }
}
