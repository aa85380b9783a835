// The sending end of one reliable stream to one receiver (issue 14): what has been sent and not yet
// acknowledged, what is due again, and the floor to send with each item. Pure and synchronous: the
// caller passes Clock millis in, sends what `due` returns and arms its own timer from `nextDue`.
//
// Entries sit in a ring indexed by sequence - headSeq, so a sequence is found in O(1); acknowledged
// and cancelled entries leave the head at once, a cancelled one in the middle stays as a tombstone
// until the head reaches it. `due` is called every few milliseconds over streams of 16k+ entries, so
// it never walks the entries: a sent entry's retransmission deadline waits in a heap ordered by
// deadline (`timers`); once passed, the entry moves to a heap ordered by sequence (`ready`), from
// which `due` takes the lowest, merged with the never-sent entries found from `unsentFrom`. A call
// costs O((entries it moves or returns) log n). The heaps are lazy: a record whose entry was since
// sent again, acknowledged, cancelled or SACKed is dropped when it surfaces.

/** One message in flight to the receiver. Its mutable fields are written by UnackedStream only. */
export interface Entry<H> {
  readonly seq: bigint
  /** What gets (re)sent. */
  readonly bytes: Uint8Array
  /** Opaque here: the caller's receipt. */
  readonly handle: H
  /** Clock millis of the last send; undefined = never sent or must resend now. */
  sentAt: number | undefined
  /** How many times it was sent. */
  sends: number
  /** The caller's count of sends on this stream at its last send (0: never): the order sends left in. */
  order: number
  /**
   * Copies the caller sent that may still arrive (`sends` also counts deferrals; a copy known lost
   * no longer counts): with one, an ack of the entry says which copy arrived.
   */
  copies: number
  /** The receiver's latest ack listed it in a range: buffered there, so not worth resending. */
  sacked: boolean
  /** Set by `cancel`: no longer counted, never sent again. */
  cancelled: boolean
}

/** Why an ack was refused: it covers sequences never sent, or its ranges are not well formed. Either way nothing changed. */
export type AckError =
  | { readonly _tag: "future"; readonly detail: string }
  | { readonly _tag: "malformed"; readonly detail: string }

const INITIAL_CAPACITY = 16
/** Heap records beyond this many per entry are rebuilt from the entries (SACK churn leaves duplicates). */
const RECORDS_PER_ENTRY = 4
/** Below this a ring never shrinks: not worth the copy. */
const SHRINK_ABOVE = 1024
const nothing: ReadonlyArray<never> = []

const emptySlots = <H>(capacity: number): Array<Entry<H> | undefined> =>
  new Array<Entry<H> | undefined>(capacity).fill(undefined)

/**
 * One incarnation's messages to one receiver, numbered from 1. An entry is live from `push` until
 * a cumulative ack covers it or it is cancelled; `count`, `bytes` and `floor` follow at once.
 */
export class UnackedStream<H> {
  private slots = emptySlots<H>(INITIAL_CAPACITY)
  /** Index in `slots` of `headSeq`. */
  private head = 0
  /** Slots in use: nextSeq - headSeq. The head slot, when there is one, is live. */
  private length = 0
  private headSeq = 1n
  private following = 1n
  private liveCount = 0
  private liveBytes = 0
  /** The highest cumulative ack seen: the receiver's `next` is at least one above it. */
  private acknowledged = 0n
  /** The entries the latest ack marked SACKed, to clear when the next one replaces the picture. */
  private sackedEntries: Array<Entry<H>> = []
  /**
   * Entries sent or unSACKed since the last call: their rto is read, and a timer armed, at the next.
   * Every live, unSACKed, sent entry is here or has a current record (same sentAt and sends) in
   * `timers` (its deadline not yet passed) or `ready` (passed).
   */
  private pending: Array<Entry<H>> = []
  private readonly timers = new Heap<Timer<H>>((a, b) => a.deadline < b.deadline)
  private readonly ready = new Heap<Timer<H>>((a, b) => a.entry.seq < b.entry.seq)
  /** Every live, unSACKed entry below this sequence has been sent. */
  private unsentFrom = 1n

  constructor(readonly incarnation: bigint) {}

  /** The sequence the next `push` gets. */
  get nextSeq(): bigint {
    return this.following
  }

  /** Live entries: neither acknowledged nor cancelled. */
  get count(): number {
    return this.liveCount
  }

  /** The bytes of the live entries, for backpressure. */
  get bytes(): number {
    return this.liveBytes
  }

  /** Numbers a new message; it is due at once (never sent). */
  push(bytes: Uint8Array, handle: H): Entry<H> {
    if (this.length === this.slots.length) this.resize(this.slots.length * 2)
    const entry: Entry<H> = {
      seq: this.following,
      bytes,
      handle,
      sentAt: undefined,
      sends: 0,
      order: 0,
      copies: 0,
      sacked: false,
      cancelled: false
    }
    this.slots[(this.head + this.length) & (this.slots.length - 1)] = entry
    this.length++
    this.following++
    this.liveCount++
    this.liveBytes += bytes.length
    return entry
  }

  /**
   * The lowest sequence still wanted (nextSeq when none): sent with every item, it tells the receiver
   * to stop waiting for anything below it, acknowledged or cancelled.
   */
  floor(): bigint {
    return this.length > 0 ? this.headSeq : this.following
  }

  /**
   * Applies the receiver's ack: every sequence up to `cumulative` is delivered or no longer wanted,
   * and `ranges` are buffered there (SACKed: not resent, but still live, since the receiver has not
   * delivered them). A cumulative below an earlier one is a stale ack: only its ranges apply, and
   * they replace the SACK picture. An ack that covers a sequence never sent, or whose ranges are not
   * ascending, disjoint, non-adjacent and above cumulative, is refused and changes nothing: the
   * receiver is confused or lying. (The first range may start at cumulative + 1.) Returns the live entries the cumulative newly acknowledges;
   * cancelled ones leave silently.
   */
  onAck(
    cumulative: bigint,
    ranges: ReadonlyArray<{ first: bigint; last: bigint }>
  ): { readonly acked: ReadonlyArray<Entry<H>> } | AckError {
    // The first range may start right after the cumulative (messages delivered there that its
    // consumer has not finished with); each next one leaves a hole after the one before.
    let previous = cumulative - 1n
    let highest = cumulative
    for (const range of ranges) {
      if (range.first > range.last) {
        return { _tag: "malformed", detail: `ack range ${range.first}..${range.last} is empty` }
      }
      if (range.first <= previous + 1n) {
        return {
          _tag: "malformed",
          detail: `ack range ${range.first}..${range.last} does not start above ${previous + 1n} (cumulative ${cumulative})`
        }
      }
      previous = range.last
      if (range.last > highest) highest = range.last
    }
    if (highest >= this.following) {
      return {
        _tag: "future",
        detail: `ack covers sequence ${highest}, but only ${this.following - 1n} were sent in incarnation ${this.incarnation}`
      }
    }

    const acked: Array<Entry<H>> = []
    if (cumulative > this.acknowledged) this.acknowledged = cumulative
    while (this.length > 0 && this.headSeq <= cumulative) {
      const entry = this.slots[this.head]!
      if (!entry.cancelled) {
        acked.push(entry)
        this.liveCount--
        this.liveBytes -= entry.bytes.length
      }
      this.popHead()
    }
    this.trimHead()

    const cleared = this.sackedEntries
    for (const entry of cleared) entry.sacked = false
    const sacked: Array<Entry<H>> = []
    for (const range of ranges) {
      if (range.last < this.headSeq) continue
      const from = range.first > this.headSeq ? Number(range.first - this.headSeq) : 0
      const to = Number(range.last - this.headSeq)
      for (let i = from; i <= to; i++) {
        const entry = this.at(i)
        if (entry.cancelled) continue
        entry.sacked = true
        sacked.push(entry)
      }
    }
    this.sackedEntries = sacked
    for (const entry of cleared) if (!entry.sacked && this.isLive(entry)) this.becameEligible(entry)
    this.probeFloor()
    return { acked }
  }

  /** Stops resending `entry` (its message is no longer wanted); true when it was live, and its count and bytes are freed at once. */
  cancel(entry: Entry<H>): boolean {
    if (!this.isLive(entry)) return false
    entry.cancelled = true
    this.liveCount--
    this.liveBytes -= entry.bytes.length
    if (entry.seq === this.headSeq) {
      this.trimHead()
      this.probeFloor()
    }
    return true
  }

  /**
   * The live, unSACKed entries to send now, in sequence order, at most `max`: those never sent, and
   * those sent at least `rtoMillis(entry)` ago. An entry's rto is read once per send (as TCP arms its
   * retransmission timer at each send), so `rtoMillis` should depend on the entry (e.g. its `sends`,
   * for backoff) and on an estimate whose changes may wait for the entry's next send.
   */
  due(now: number, rtoMillis: (entry: Entry<H>) => number, max: number): ReadonlyArray<Entry<H>> {
    if (max <= 0 || this.liveCount === 0) return nothing
    this.fold(rtoMillis)
    for (
      let timer = this.timers.peek();
      timer !== undefined && timer.deadline <= now;
      timer = this.timers.peek()
    ) {
      this.timers.pop()
      if (this.current(timer)) this.ready.push(timer)
    }
    // Merge the two ascending sources; what is taken from `ready` goes back, as it stays due until sent.
    const out: Array<Entry<H>> = []
    const taken: Array<Timer<H>> = []
    let unsent = this.firstUnsent(this.unsentFrom)
    while (out.length < max) {
      const timer = this.readyTop(out[out.length - 1])
      if (timer === undefined && unsent === undefined) break
      if (unsent === undefined || (timer !== undefined && timer.entry.seq < unsent.seq)) {
        this.ready.pop()
        taken.push(timer!)
        out.push(timer!.entry)
      } else {
        out.push(unsent)
        unsent = this.firstUnsent(unsent.seq + 1n)
      }
    }
    for (const timer of taken) this.ready.push(timer)
    return out
  }

  /** Records a send of `entry` at `now`: its retransmission timer restarts. */
  markSent(entry: Entry<H>, now: number): void {
    entry.sentAt = now
    entry.sends++
    if (this.isLive(entry)) this.becameEligible(entry)
  }

  /** After a reconnect nothing in flight can be trusted to arrive, nor the receiver's buffer to survive: every live entry is due now. */
  resendAll(): void {
    for (let i = 0; i < this.length; i++) {
      const entry = this.at(i)
      entry.sentAt = undefined
      entry.sacked = false
    }
    this.sackedEntries = []
    this.pending = []
    this.timers.clear()
    this.ready.clear()
    this.unsentFrom = this.headSeq
  }

  /**
   * The peer is back after an outage (its ack came while entries were backed off): every live entry
   * sent more than once that it has not listed as held is due now, rather than when its backed-off
   * timer says. Unlike `resendAll`, SACKed entries stay held (the receiver has them), and entries
   * sent once (likely still on their way) keep their timers.
   */
  expedite(): void {
    for (let i = 0; i < this.length; i++) {
      const entry = this.at(i)
      if (!entry.cancelled && !entry.sacked && entry.sends > 1) entry.sentAt = undefined
    }
    // Their timers are stale now (`current` drops them); the unsent scan starts over.
    this.unsentFrom = this.headSeq
  }

  /** Live entries in sequence order (safe to cancel or ack while iterating). */
  *live(): IterableIterator<Entry<H>> {
    let seq = this.headSeq
    for (;;) {
      if (seq < this.headSeq) seq = this.headSeq
      if (seq >= this.following) return
      const entry = this.at(Number(seq - this.headSeq))
      seq++
      if (!entry.cancelled) yield entry
    }
  }

  /**
   * Earliest Clock millis at which due() could return something given rtoMillis, or undefined when
   * nothing is live; entries never sent count as due now. Also 0 when a deadline has already passed,
   * and undefined when every live entry is SACKed (only an ack or resendAll can make one due).
   */
  nextDue(rtoMillis: (entry: Entry<H>) => number): number | undefined {
    if (this.liveCount === 0) return undefined
    this.fold(rtoMillis)
    if (this.firstUnsent(this.unsentFrom) !== undefined || this.readyTop(undefined) !== undefined) return 0
    for (let timer = this.timers.peek(); timer !== undefined; timer = this.timers.peek()) {
      if (this.current(timer)) return timer.deadline
      this.timers.pop()
    }
    return undefined
  }

  private at(offset: number): Entry<H> {
    return this.slots[(this.head + offset) & (this.slots.length - 1)]!
  }

  /** Live entries of this stream are the ones still in the ring at their own sequence, not cancelled. */
  private isLive(entry: Entry<H>): boolean {
    return (
      !entry.cancelled &&
      entry.seq >= this.headSeq &&
      entry.seq < this.following &&
      this.at(Number(entry.seq - this.headSeq)) === entry
    )
  }

  private popHead(): void {
    this.slots[this.head] = undefined
    this.head = (this.head + 1) & (this.slots.length - 1)
    this.length--
    this.headSeq++
    if (this.slots.length > SHRINK_ABOVE && this.length < this.slots.length >>> 2) {
      this.resize(this.slots.length >>> 1)
    }
  }

  /** Drops cancelled tombstones from the head, so the head is live and `floor` is O(1). */
  private trimHead(): void {
    while (this.length > 0 && this.slots[this.head]!.cancelled) this.popHead()
    if (this.unsentFrom < this.headSeq) this.unsentFrom = this.headSeq
  }

  private resize(capacity: number): void {
    const slots = emptySlots<H>(capacity)
    for (let i = 0; i < this.length; i++) slots[i] = this.at(i)
    this.slots = slots
    this.head = 0
  }

  /**
   * When the floor passes cancelled sequences the receiver may still be waiting for them, with the
   * head entry buffered behind the hole (SACKed, so never resent): nothing would carry the new floor
   * and the stream would stall until the receiver's gap timeout. UnSACKing the head lets its
   * retransmission timer resend it, with the floor, at most once per rto.
   */
  private probeFloor(): void {
    if (this.length === 0 || this.headSeq <= this.acknowledged + 1n) return
    const head = this.slots[this.head]!
    if (!head.sacked) return
    head.sacked = false
    this.becameEligible(head)
  }

  /** Keeps the invariants of the heaps and `unsentFrom` for an entry sent, or that can be due again. */
  private becameEligible(entry: Entry<H>): void {
    if (entry.sentAt === undefined) {
      if (entry.seq < this.unsentFrom) this.unsentFrom = entry.seq
      return
    }
    this.pending.push(entry)
    // A caller that marks sends without asking what is due, or SACK churn, would grow these without end.
    if (
      this.pending.length + this.timers.size + this.ready.size >
      RECORDS_PER_ENTRY * this.length + INITIAL_CAPACITY
    ) {
      this.rebuild()
    }
  }

  /** Starts the heaps again from the entries themselves. */
  private rebuild(): void {
    this.timers.clear()
    this.ready.clear()
    this.pending = []
    for (let i = 0; i < this.length; i++) {
      const entry = this.at(i)
      if (!entry.cancelled && !entry.sacked && entry.sentAt !== undefined) this.pending.push(entry)
    }
  }

  /** Reads the rto of the entries sent or unSACKed since the last call, and arms their timers. */
  private fold(rtoMillis: (entry: Entry<H>) => number): void {
    if (this.pending.length === 0) return
    for (const entry of this.pending) {
      if (entry.sentAt === undefined || entry.sacked || !this.isLive(entry)) continue
      this.timers.push({
        deadline: entry.sentAt + rtoMillis(entry),
        entry,
        sentAt: entry.sentAt,
        sends: entry.sends
      })
    }
    this.pending = []
  }

  /** A record still stands for its entry: not sent again since, nor acknowledged, cancelled or SACKed. */
  private current(timer: Timer<H>): boolean {
    const entry = timer.entry
    return entry.sentAt === timer.sentAt && entry.sends === timer.sends && !entry.sacked && this.isLive(entry)
  }

  /** The lowest current record of `ready`, dropping stale ones and a second record of `previous`. */
  private readyTop(previous: Entry<H> | undefined): Timer<H> | undefined {
    for (let timer = this.ready.peek(); timer !== undefined; timer = this.ready.peek()) {
      if (timer.entry !== previous && this.current(timer)) return timer
      this.ready.pop()
    }
    return undefined
  }

  /**
   * The lowest live, unSACKed, never-sent entry from `from`. Moves `unsentFrom` past the sent and
   * cancelled entries it steps over first, so each is stepped over once.
   */
  private firstUnsent(from: bigint): Entry<H> | undefined {
    let leading = from === this.unsentFrom
    for (let i = Number(from - this.headSeq); i < this.length; i++) {
      const entry = this.at(i)
      if (entry.cancelled || entry.sentAt !== undefined) {
        if (leading) this.unsentFrom = entry.seq + 1n
        continue
      }
      leading = false
      if (!entry.sacked) return entry
    }
    return undefined
  }
}

interface Timer<H> {
  readonly deadline: number
  readonly entry: Entry<H>
  /** The entry's sentAt and sends when the timer was armed: it stands for that send only. */
  readonly sentAt: number
  readonly sends: number
}

/** A binary min-heap under `before`. */
class Heap<A> {
  private readonly items: Array<A> = []
  constructor(private readonly before: (a: A, b: A) => boolean) {}

  get size(): number {
    return this.items.length
  }

  peek(): A | undefined {
    return this.items[0]
  }

  push(item: A): void {
    const items = this.items
    let i = items.length
    items.push(item)
    while (i > 0) {
      const parent = (i - 1) >>> 1
      if (!this.before(item, items[parent]!)) break
      items[i] = items[parent]!
      i = parent
    }
    items[i] = item
  }

  pop(): A | undefined {
    const items = this.items
    const top = items[0]
    const last = items.pop()
    if (items.length === 0 || last === undefined) return top
    let i = 0
    for (;;) {
      const left = 2 * i + 1
      if (left >= items.length) break
      const right = left + 1
      const child = right < items.length && this.before(items[right]!, items[left]!) ? right : left
      if (!this.before(items[child]!, last)) break
      items[i] = items[child]!
      i = child
    }
    items[i] = last
    return top
  }

  clear(): void {
    this.items.length = 0
  }
}
