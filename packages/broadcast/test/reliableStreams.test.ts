import { assert, describe, it } from "@effect/vitest"
import * as fc from "effect/FastCheck"
import {
  type AckState,
  type Offered,
  type ReorderConfig,
  ReorderStream
} from "../src/internal/reliable/reorder.js"
import { type Entry, UnackedStream } from "../src/internal/reliable/unacked.js"

interface Item {
  readonly incarnation: bigint
  readonly seq: bigint
}

const key = (item: Item) => `${item.incarnation}:${item.seq}`

/** Asserts the items are strictly increasing in (incarnation, seq), which also means no repeats. */
const assertIncreasing = (items: ReadonlyArray<Item>) => {
  for (let i = 1; i < items.length; i++) {
    const a = items[i - 1]!
    const b = items[i]!
    assert.isTrue(
      a.incarnation < b.incarnation || (a.incarnation === b.incarnation && a.seq < b.seq),
      `${key(a)} handed out before ${key(b)}`
    )
  }
}

/** The contiguous runs of a set of sequences, lowest first. */
const runsOf = (seqs: Iterable<bigint>): Array<{ first: bigint; last: bigint }> => {
  const sorted = [...seqs].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0))
  const runs: Array<{ first: bigint; last: bigint }> = []
  for (const seq of sorted) {
    const last = runs[runs.length - 1]
    if (last !== undefined && last.last + 1n === seq) last.last = seq
    else runs.push({ first: seq, last: seq })
  }
  return runs
}

const range = (from: number, to: number): Array<bigint> =>
  Array.from({ length: Math.max(0, to - from + 1) }, (_, i) => BigInt(from + i))

/**
 * The receiver's spec written the plain way (a Map and loops over sequences), to hold the real
 * ReorderStream to on random inputs.
 */
class ReorderModel {
  incarnation: bigint | undefined = undefined
  next = 1n
  readonly buffer = new Map<bigint, Item>()
  gapSince: number | undefined = undefined
  constructor(readonly config: ReorderConfig) {}

  offer(incarnation: bigint, seq: bigint, floor: bigint, item: Item, now: number): Offered<Item> {
    if (this.incarnation !== undefined && incarnation < this.incarnation) {
      return { outcome: "stale", deliver: [], skipped: 0 }
    }
    const deliver: Array<Item> = []
    let skipped = 0
    if (this.incarnation === undefined || incarnation > this.incarnation) {
      for (const s of [...this.buffer.keys()].sort((a, b) => (a < b ? -1 : 1))) {
        skipped += Number(s - this.next)
        deliver.push(this.buffer.get(s)!)
        this.next = s + 1n
      }
      this.buffer.clear()
      this.gapSince = undefined
      this.incarnation = incarnation
      this.next = floor > 1n ? floor : 1n
    }
    const before = this.next
    if (floor > this.next) {
      for (; this.next < floor; this.next++) {
        const held = this.buffer.get(this.next)
        if (held === undefined) skipped++
        else deliver.push(held)
        this.buffer.delete(this.next)
      }
      this.drain(deliver)
    }
    let outcome: Offered<Item>["outcome"]
    if (seq < this.next || this.buffer.has(seq)) outcome = "duplicate"
    else if (seq === this.next) {
      deliver.push(item)
      this.next++
      this.drain(deliver)
      outcome = "delivered"
    } else if (seq - this.next > BigInt(this.config.window)) outcome = "beyond-window"
    else {
      this.buffer.set(seq, item)
      outcome = "buffered"
    }
    if (this.buffer.size === 0) this.gapSince = undefined
    else if (this.gapSince === undefined || this.next !== before) this.gapSince = now
    return { outcome, deliver, skipped }
  }

  expire(now: number) {
    if (this.buffer.size === 0 || now - this.gapSince! < this.config.gapTimeoutMillis)
      return { deliver: [], skipped: 0 }
    const lowest = [...this.buffer.keys()].reduce((a, b) => (a < b ? a : b))
    const skipped = Number(lowest - this.next)
    this.next = lowest
    const deliver: Array<Item> = []
    this.drain(deliver)
    this.gapSince = this.buffer.size > 0 ? now : undefined
    return { deliver, skipped }
  }

  ack(): AckState | undefined {
    if (this.incarnation === undefined) return undefined
    return {
      incarnation: this.incarnation,
      cumulative: this.next - 1n,
      ranges: runsOf(this.buffer.keys()).slice(0, this.config.maxRanges)
    }
  }

  private drain(deliver: Array<Item>) {
    for (let held = this.buffer.get(this.next); held !== undefined; held = this.buffer.get(this.next)) {
      deliver.push(held)
      this.buffer.delete(this.next)
      this.next++
    }
  }
}

const reorderConfig = fc.record({
  window: fc.oneof(fc.integer({ min: 1, max: 16 }), fc.constant(64)),
  gapTimeoutMillis: fc.integer({ min: 0, max: 50 }),
  maxRanges: fc.integer({ min: 0, max: 4 })
})

type ReorderOp =
  | {
      readonly _tag: "offer"
      readonly incarnation: bigint
      readonly seq: bigint
      readonly floor: bigint
      readonly wait: number
    }
  | { readonly _tag: "expire"; readonly wait: number }

/** Offers from up to three incarnations, mostly the first, with floors mostly 1, and expiries. */
const reorderOps = fc.array(
  fc.oneof(
    {
      weight: 8,
      arbitrary: fc.record({
        _tag: fc.constant("offer" as const),
        incarnation: fc.oneof(
          { weight: 6, arbitrary: fc.constant(1n) },
          { weight: 1, arbitrary: fc.bigInt(2n, 3n) }
        ),
        seq: fc.bigInt(0n, 40n),
        floor: fc.oneof(
          { weight: 4, arbitrary: fc.constant(1n) },
          { weight: 1, arbitrary: fc.bigInt(0n, 40n) }
        ),
        wait: fc.nat(20)
      })
    },
    { weight: 1, arbitrary: fc.record({ _tag: fc.constant("expire" as const), wait: fc.nat(60) }) }
  ),
  { maxLength: 200, size: "max" }
)

/** Runs the ops against a ReorderStream, calling `each` with every result, in order. */
const runReorder = (
  config: ReorderConfig,
  ops: ReadonlyArray<ReorderOp>,
  each: (
    stream: ReorderStream<Item>,
    op: ReorderOp,
    result: { readonly deliver: ReadonlyArray<Item>; readonly skipped: number; readonly outcome?: string },
    now: number,
    item: Item | undefined
  ) => void
) => {
  const stream = new ReorderStream<Item>(config)
  let now = 0
  for (const op of ops) {
    now += op.wait
    if (op._tag === "offer") {
      const item = { incarnation: op.incarnation, seq: op.seq }
      each(stream, op, stream.offer(op.incarnation, op.seq, op.floor, item, now), now, item)
    } else each(stream, op, stream.expire(now), now, undefined)
  }
  return stream
}

describe("ReorderStream", () => {
  it.prop(
    "hands out items strictly increasing in (incarnation, seq), never twice, and buffers at most the window",
    [reorderConfig, reorderOps],
    ([config, ops]) => {
      const delivered: Array<Item> = []
      const refused = new Set<Item>()
      runReorder(config, ops, (stream, _, result, _now, item) => {
        delivered.push(...result.deliver)
        assert.isAtMost(stream.buffered, config.window)
        if (item === undefined) return
        assert.strictEqual(
          result.deliver.includes(item),
          result.outcome === "delivered",
          `${key(item)} ${result.outcome}`
        )
        if (result.outcome !== "delivered" && result.outcome !== "buffered") refused.add(item)
      })
      assertIncreasing(delivered)
      for (const item of delivered) assert.isFalse(refused.has(item), `${key(item)} refused, then handed out`)
    }
  )

  it.prop(
    "agrees with a plain model of the spec on every outcome, delivery, skip count, deadline and ack",
    [reorderConfig, reorderOps],
    ([config, ops]) => {
      const model = new ReorderModel(config)
      runReorder(config, ops, (stream, op, result, now) => {
        const expected =
          op._tag === "offer"
            ? model.offer(op.incarnation, op.seq, op.floor, { incarnation: op.incarnation, seq: op.seq }, now)
            : model.expire(now)
        const what = `${op._tag} ${op._tag === "offer" ? key(op) : ""} at ${now}`
        assert.strictEqual(result.outcome, (expected as Partial<Offered<Item>>).outcome, what)
        assert.deepStrictEqual(result.deliver.map(key), expected.deliver.map(key), what)
        assert.strictEqual(result.skipped, expected.skipped, what)
        assert.strictEqual(stream.buffered, model.buffer.size, what)
        assert.strictEqual(stream.incarnation, model.incarnation, what)
        assert.strictEqual(stream.next, model.incarnation === undefined ? undefined : model.next, what)
        assert.strictEqual(
          stream.gapDeadline,
          model.gapSince === undefined ? undefined : model.gapSince + config.gapTimeoutMillis,
          what
        )
        assert.deepStrictEqual(stream.ack(), model.ack(), what)
      })
    }
  )

  it.prop(
    "delivers every sequence 1..n exactly once, in order, when nothing is lost and floors are honest",
    [
      fc.integer({ min: 1, max: 60 }).chain((n) =>
        fc.record({
          order: fc.shuffledSubarray(range(1, n), { minLength: n, maxLength: n }),
          copies: fc.array(fc.nat(n - 1), { maxLength: n, size: "max" }),
          honestFloors: fc.boolean()
        })
      )
    ],
    ([{ order, copies, honestFloors }]) => {
      const arrivals = [...order]
      for (const at of copies) arrivals.splice(at, 0, order[at]!)
      const stream = new ReorderStream<bigint>({ window: 64, gapTimeoutMillis: 1000, maxRanges: 8 })
      const delivered: Array<bigint> = []
      let skipped = 0
      arrivals.forEach((seq, i) => {
        // The sender's floor: the lowest sequence it will still send (here: the lowest still to arrive).
        const floor = honestFloors ? arrivals.slice(i).reduce((a, b) => (a < b ? a : b)) : 1n
        const result = stream.offer(7n, seq, floor, seq, i)
        delivered.push(...result.deliver)
        skipped += result.skipped
      })
      assert.deepStrictEqual(delivered, range(1, order.length))
      assert.strictEqual(skipped, 0)
      assert.strictEqual(stream.buffered, 0)
      assert.deepStrictEqual(stream.ack(), { incarnation: 7n, cumulative: BigInt(order.length), ranges: [] })
    }
  )

  it.prop(
    "with losses and honest floors, delivers what arrived and counts the rest skipped; a new incarnation flushes the old, whose stragglers are stale",
    [
      fc.integer({ min: 1, max: 40 }).chain((n) =>
        fc.record({
          first: fc.shuffledSubarray(range(1, n), { minLength: n, maxLength: n }),
          second: fc.shuffledSubarray(range(1, n), { minLength: n, maxLength: n }),
          lost: fc.array(fc.boolean(), { minLength: 2 * n, maxLength: 2 * n }),
          stragglers: fc.nat(n)
        })
      )
    ],
    ([{ first, second, lost, stragglers }]) => {
      const stream = new ReorderStream<Item>({ window: 64, gapTimeoutMillis: 1000, maxRanges: 8 })
      // Incarnation 1 restarts before its last `stragglers` arrivals, which come after incarnation 2's.
      const cut = first.length - stragglers
      const arrivals = [
        ...first.slice(0, cut).map((seq) => ({ incarnation: 1n, seq })),
        ...second.map((seq) => ({ incarnation: 2n, seq })),
        ...first.slice(cut).map((seq) => ({ incarnation: 1n, seq }))
      ]
      const kept = arrivals.filter((_, i) => !lost[i])
      const restart = kept.findIndex((item) => item.incarnation === 2n)
      const stale = (i: number) => kept[i]!.incarnation === 1n && restart !== -1 && i > restart
      const delivered: Array<Item> = []
      let skipped = 0
      kept.forEach((item, i) => {
        // Lost copies are never sent again: the floor passes them as it would cancelled ones.
        const rest = kept.slice(i).filter((later) => later.incarnation === item.incarnation)
        const floor = rest.reduce((a, b) => (a.seq < b.seq ? a : b)).seq
        const result = stream.offer(item.incarnation, item.seq, floor, item, i)
        delivered.push(...result.deliver)
        skipped += result.skipped
        assert.strictEqual(result.outcome === "stale", stale(i), key(item))
      })
      // Incarnation 3 flushes what incarnation 2 still holds behind its last holes.
      const marker = { incarnation: 3n, seq: 1n }
      const flushed = stream.offer(3n, 1n, 1n, marker, kept.length)
      delivered.push(...flushed.deliver)
      skipped += flushed.skipped
      const expected = (incarnation: bigint) =>
        kept
          .filter((item, i) => item.incarnation === incarnation && !stale(i))
          .map((item) => item.seq)
          .sort((a, b) => (a < b ? -1 : 1))
      const one = expected(1n)
      const two = expected(2n)
      assert.deepStrictEqual(delivered.map(key), [
        ...one.map((seq) => `1:${seq}`),
        ...two.map((seq) => `2:${seq}`),
        key(marker)
      ])
      // An incarnation starts at its first floor; from there every sequence up to the highest delivered
      // was delivered or skipped.
      const gaps = (incarnation: bigint, seqs: ReadonlyArray<bigint>) => {
        if (seqs.length === 0) return 0
        const start = kept
          .filter((item) => item.incarnation === incarnation)
          .reduce((a, b) => (a.seq < b.seq ? a : b))
        return Number(seqs[seqs.length - 1]! - start.seq + 1n) - seqs.length
      }
      assert.strictEqual(skipped, gaps(1n, one) + gaps(2n, two))
    }
  )

  it.prop(
    "refuses an item more than the window past next, and keeps nothing of it",
    [fc.integer({ min: 1, max: 8 }), fc.array(fc.bigInt(2n, 30n), { maxLength: 40, size: "max" })],
    ([window, seqs]) => {
      const stream = new ReorderStream<bigint>({ window, gapTimeoutMillis: 1000, maxRanges: 64 })
      const held = new Set<bigint>()
      for (const seq of seqs) {
        const result = stream.offer(1n, seq, 1n, seq, 0)
        // 1 never arrives, so next stays 1.
        assert.strictEqual(stream.next, 1n)
        const expected = held.has(seq)
          ? "duplicate"
          : seq - 1n > BigInt(window)
            ? "beyond-window"
            : "buffered"
        assert.strictEqual(result.outcome, expected, `${seq} with window ${window}`)
        if (expected === "buffered") held.add(seq)
        assert.strictEqual(stream.buffered, held.size)
      }
      assert.deepStrictEqual(stream.ack()?.ranges ?? [], runsOf(held))
      const flushed = stream.offer(2n, 1n, 1n, 0n, 0)
      assert.deepStrictEqual(flushed.deliver, [...[...held].sort((a, b) => (a < b ? -1 : 1)), 0n])
    }
  )

  it.prop(
    "expire skips exactly the hole at next once gapTimeoutMillis has passed, counts it, and gives the next hole a fresh deadline",
    [
      fc.uniqueArray(fc.bigInt(2n, 40n), { minLength: 1, maxLength: 20, size: "max" }),
      fc.integer({ min: 1, max: 100 }),
      fc.nat(50)
    ],
    ([seqs, timeout, start]) => {
      const stream = new ReorderStream<bigint>({ window: 64, gapTimeoutMillis: timeout, maxRanges: 64 })
      for (const seq of seqs) stream.offer(1n, seq, 1n, seq, start)
      assert.strictEqual(stream.gapDeadline, start + timeout)
      assert.deepStrictEqual(stream.expire(start + timeout - 1), { deliver: [], skipped: 0 })
      assert.strictEqual(stream.next, 1n)
      const [hole, ...rest] = runsOf(seqs)
      const later = start + timeout
      const result = stream.expire(later)
      assert.strictEqual(result.skipped, Number(hole!.first - 1n))
      assert.deepStrictEqual(result.deliver, range(Number(hole!.first), Number(hole!.last)))
      assert.strictEqual(stream.next, hole!.last + 1n)
      assert.deepStrictEqual(stream.ack()!.ranges, rest)
      assert.strictEqual(stream.gapDeadline, rest.length > 0 ? later + timeout : undefined)
      // The next hole waits its own full timeout.
      assert.deepStrictEqual(stream.expire(later + timeout - 1), { deliver: [], skipped: 0 })
    }
  )

  it.prop(
    "ack reports next - 1 and the buffered runs, lowest first, at most maxRanges",
    [
      fc.integer({ min: 0, max: 6 }),
      fc.array(fc.record({ seq: fc.bigInt(1n, 50n), floor: fc.bigInt(1n, 12n) }), {
        maxLength: 60,
        size: "max"
      })
    ],
    ([maxRanges, offers]) => {
      const stream = new ReorderStream<bigint>({ window: 64, gapTimeoutMillis: 1000, maxRanges })
      assert.isUndefined(stream.ack())
      const held = new Set<bigint>()
      for (const { seq, floor } of offers) {
        const result = stream.offer(1n, seq, floor, seq, 0)
        if (result.outcome === "buffered") held.add(seq)
        for (const delivered of result.deliver) held.delete(delivered)
        const ack = stream.ack()!
        assert.strictEqual(ack.cumulative, stream.next! - 1n)
        assert.deepStrictEqual(ack.ranges, runsOf(held).slice(0, maxRanges))
        for (const s of held) assert.isTrue(s > stream.next!, `buffered ${s} is above next`)
      }
    }
  )
})

type SenderOp =
  | { readonly _tag: "push"; readonly size: number }
  | {
      readonly _tag: "send"
      readonly max: number
      readonly sent: ReadonlyArray<boolean>
      readonly arrives: ReadonlyArray<boolean>
    }
  | { readonly _tag: "ack"; readonly stale: number }
  | { readonly _tag: "cancel"; readonly pick: number }
  | { readonly _tag: "tick"; readonly millis: number }
  | { readonly _tag: "wake" }
  | { readonly _tag: "resendAll" }

const senderOps = fc.array(
  fc.oneof(
    { weight: 5, arbitrary: fc.record({ _tag: fc.constant("push" as const), size: fc.nat(20) }) },
    {
      weight: 5,
      arbitrary: fc.record({
        _tag: fc.constant("send" as const),
        max: fc.integer({ min: 0, max: 12 }),
        sent: fc.array(fc.boolean(), { minLength: 12, maxLength: 12 }),
        arrives: fc.array(fc.boolean(), { minLength: 12, maxLength: 12 })
      })
    },
    { weight: 4, arbitrary: fc.record({ _tag: fc.constant("ack" as const), stale: fc.nat(3) }) },
    { weight: 2, arbitrary: fc.record({ _tag: fc.constant("cancel" as const), pick: fc.nat() }) },
    { weight: 4, arbitrary: fc.record({ _tag: fc.constant("tick" as const), millis: fc.nat(150) }) },
    { weight: 2, arbitrary: fc.constant({ _tag: "wake" as const }) },
    { weight: 1, arbitrary: fc.constant({ _tag: "resendAll" as const }) }
  ),
  { maxLength: 150, size: "max" }
)

/** Backoff by sends: 40, 80, 160, 320 ms, then 320. */
const rto = (entry: Entry<number>) => 40 * 2 ** Math.min(Math.max(entry.sends - 1, 0), 3)

/** What due() must return, worked out from the entries' own fields. */
const dueByHand = (stream: UnackedStream<number>, now: number, max: number) =>
  [...stream.live()]
    .filter((e) => !e.sacked && (e.sentAt === undefined || now - e.sentAt >= rto(e)))
    .slice(0, max)
    .map((e) => e.seq)

/** A receiver reduced to what acks need: what it holds, and the highest sequence below which it has everything. */
class ToyReceiver {
  readonly held = new Set<bigint>()
  cumulative = 0n
  receive(seq: bigint, floor: bigint) {
    if (floor - 1n > this.cumulative) this.cumulative = floor - 1n
    if (seq > this.cumulative) this.held.add(seq)
    for (const s of this.held) if (s <= this.cumulative) this.held.delete(s)
    while (this.held.delete(this.cumulative + 1n)) this.cumulative++
  }
  ack() {
    return { cumulative: this.cumulative, ranges: runsOf(this.held) }
  }
}

interface SenderRun {
  readonly stream: UnackedStream<number>
  readonly now: number
  /** The highest cumulative acknowledged so far. */
  readonly acknowledged: bigint
}

/**
 * Runs the ops against an UnackedStream with a toy receiver, checking the bookkeeping a caller
 * relies on after every op: count, bytes, floor (never going down), live(), what each ack
 * acknowledges, the SACK flags, and that due() and nextDue() agree with the entries' fields.
 */
const runSender = (ops: ReadonlyArray<SenderOp>): SenderRun => {
  const stream = new UnackedStream<number>(3n)
  const receiver = new ToyReceiver()
  const acks: Array<{ cumulative: bigint; ranges: Array<{ first: bigint; last: bigint }> }> = []
  let live: Array<Entry<number>> = []
  let now = 0
  let floor = stream.floor()
  let acknowledged = 0n
  for (const op of ops) {
    switch (op._tag) {
      case "push": {
        const entry = stream.push(new Uint8Array(op.size), live.length)
        assert.strictEqual(entry.seq, stream.nextSeq - 1n)
        live.push(entry)
        break
      }
      case "send": {
        const due = stream.due(now, rto, op.max)
        assert.deepStrictEqual(
          due.map((e) => e.seq),
          dueByHand(stream, now, op.max),
          "due() is the live, unSACKed entries whose rto has passed"
        )
        due.forEach((entry, i) => {
          if (!op.sent[i]) return
          stream.markSent(entry, now)
          if (op.arrives[i]) receiver.receive(entry.seq, stream.floor())
        })
        break
      }
      case "ack": {
        acks.push(receiver.ack())
        const ack = acks[Math.max(0, acks.length - 1 - op.stale)]!
        const result = stream.onAck(ack.cumulative, ack.ranges)
        assert.isFalse("_tag" in result, `a valid ack refused: ${JSON.stringify("_tag" in result && result)}`)
        const acked = "acked" in result ? result.acked : []
        assert.deepStrictEqual(
          acked.map((e) => e.seq),
          live.filter((e) => e.seq <= ack.cumulative).map((e) => e.seq),
          "an ack acknowledges the live entries up to its cumulative"
        )
        live = live.filter((e) => e.seq > ack.cumulative)
        if (ack.cumulative > acknowledged) acknowledged = ack.cumulative
        const inRanges = (seq: bigint) => ack.ranges.some((r) => r.first <= seq && seq <= r.last)
        for (const e of live) {
          if (e.sacked) assert.isTrue(inRanges(e.seq), `${e.seq} SACKed outside the latest ack's ranges`)
          // The one exception: the head, unSACKed so it carries a floor that passed cancelled sequences.
          else if (inRanges(e.seq))
            assert.isTrue(e === live[0] && e.seq > acknowledged + 1n, `${e.seq} not SACKed`)
        }
        break
      }
      case "cancel": {
        if (live.length === 0) break
        const entry = live[op.pick % live.length]!
        assert.isTrue(stream.cancel(entry))
        assert.isFalse(stream.cancel(entry), "cancelling twice")
        live = live.filter((e) => e !== entry)
        break
      }
      case "tick":
        now += op.millis
        break
      case "wake": {
        const at = stream.nextDue(rto)
        if (at === undefined) break
        now = Math.max(now, at)
        const due = stream.due(now, rto, Number.POSITIVE_INFINITY)
        assert.deepStrictEqual(
          due.map((e) => e.seq),
          dueByHand(stream, now, Number.POSITIVE_INFINITY)
        )
        if (due.length === 0) {
          const again = stream.nextDue(rto)
          assert.isTrue(
            again === undefined || again > now,
            "a wake-up that finds nothing due moves the next one on"
          )
        }
        break
      }
      case "resendAll":
        stream.resendAll()
        assert.deepStrictEqual(
          stream.due(now, rto, Number.POSITIVE_INFINITY).map((e) => e.seq),
          live.map((e) => e.seq),
          "after resendAll every live entry is due"
        )
        break
    }
    assert.strictEqual(stream.count, live.length)
    assert.strictEqual(
      stream.bytes,
      live.reduce((sum, e) => sum + e.bytes.length, 0)
    )
    assert.deepStrictEqual([...stream.live()], live)
    const lowest = live[0]?.seq ?? stream.nextSeq
    assert.strictEqual(stream.floor(), lowest)
    assert.isAtLeast(Number(stream.floor()), Number(floor), "floor never goes down")
    floor = stream.floor()
    // nextDue() is the earliest deadline (or any time up to now once one has passed), undefined when none can be due.
    const eligible = live.filter((e) => !e.sacked)
    const earliest = eligible.reduce(
      (min, e) => Math.min(min, e.sentAt === undefined ? 0 : e.sentAt + rto(e)),
      Number.POSITIVE_INFINITY
    )
    const next = stream.nextDue(rto)
    if (eligible.length === 0) assert.isUndefined(next)
    else if (earliest > now) assert.strictEqual(next, earliest, "nextDue is the earliest deadline")
    else assert.isTrue(next !== undefined && next <= now, `nextDue ${next} with an entry due at ${earliest}`)
  }
  return { stream, now, acknowledged }
}

const snapshot = (stream: UnackedStream<number>, now: number) => ({
  nextSeq: stream.nextSeq,
  count: stream.count,
  bytes: stream.bytes,
  floor: stream.floor(),
  live: [...stream.live()].map((e) => ({ seq: e.seq, sacked: e.sacked, sentAt: e.sentAt, sends: e.sends })),
  due: stream.due(now, rto, Number.POSITIVE_INFINITY).map((e) => e.seq)
})

type Ranges = Array<{ first: bigint; last: bigint }>

/** Acks to refuse, given the highest sequence sent, the highest acknowledged, and a shift. */
const badAcks = {
  "future cumulative": (top: bigint, _: bigint, by: bigint): [bigint, Ranges] => [top + 1n + by, []],
  "future range": (top: bigint, low: bigint, by: bigint): [bigint, Ranges] => [
    low,
    [{ first: top, last: top + 1n + by }]
  ],
  "empty range": (_: bigint, low: bigint, by: bigint): [bigint, Ranges] => [
    low - 10n,
    [{ first: low - 5n, last: low - 6n - by }]
  ],
  overlapping: (_: bigint, low: bigint, by: bigint): [bigint, Ranges] => [
    low - 20n,
    [
      { first: low - 10n, last: low - 5n },
      { first: low - 6n - by, last: low - 2n }
    ]
  ],
  adjacent: (_: bigint, low: bigint, by: bigint): [bigint, Ranges] => [
    low - 20n,
    [
      { first: low - 10n, last: low - 5n },
      { first: low - 4n, last: low - 4n + by }
    ]
  ],
  "at or below cumulative": (_: bigint, low: bigint, by: bigint): [bigint, Ranges] => [
    low - 10n,
    [{ first: low - 10n - by, last: low - 8n }]
  ]
}

type BadAck = keyof typeof badAcks

describe("UnackedStream", () => {
  it.prop(
    "count, bytes, floor and live() follow pushes, acks from a simulated receiver and cancels; due() and nextDue() agree with the entries",
    [senderOps],
    ([ops]) => {
      runSender(ops)
    }
  )

  it.prop(
    "refuses a future ack or malformed ranges, and changes nothing",
    [senderOps, fc.constantFrom(...(Object.keys(badAcks) as Array<BadAck>)), fc.bigInt(0n, 5n)],
    ([ops, bad, by]) => {
      const { stream, now } = runSender([...ops, { _tag: "push", size: 3 }, { _tag: "push", size: 3 }])
      const before = snapshot(stream, now)
      const top = stream.nextSeq - 1n
      const low = stream.floor() - 1n
      const [cumulative, ranges] = badAcks[bad](top, low, by)
      const result = stream.onAck(cumulative, ranges)
      assert.isTrue("_tag" in result, `${bad} accepted`)
      assert.strictEqual("_tag" in result && result._tag, bad.startsWith("future") ? "future" : "malformed")
      assert.deepStrictEqual(snapshot(stream, now), before)
    }
  )

  it.prop(
    "due() never returns acked, cancelled or SACKed entries, in sequence order, and resendAll makes every live one due",
    [senderOps],
    ([ops]) => {
      const { stream, now } = runSender(ops)
      const due = stream.due(now, rto, Number.POSITIVE_INFINITY)
      for (let i = 0; i < due.length; i++) {
        const entry = due[i]!
        assert.isFalse(entry.cancelled || entry.sacked)
        assert.isTrue(entry.seq >= stream.floor())
        if (i > 0) assert.isTrue(due[i - 1]!.seq < entry.seq)
      }
      const live = [...stream.live()]
      stream.resendAll()
      assert.deepStrictEqual(stream.due(now, rto, Number.POSITIVE_INFINITY), live)
      assert.strictEqual(stream.nextDue(rto), live.length > 0 ? 0 : undefined)
    }
  )

  it("resends a SACKed head once the floor passes a cancelled sequence, so the receiver learns the floor", () => {
    const stream = new UnackedStream<string>(1n)
    const [, second, third] = ["a", "b", "c"].map((h) => stream.push(new Uint8Array(1), h))
    for (const entry of stream.due(0, () => 100, 10)) stream.markSent(entry, 0)
    // The receiver got 1 and 3, not 2.
    const result = stream.onAck(1n, [{ first: 3n, last: 3n }])
    assert.deepStrictEqual("acked" in result && result.acked.map((e) => e.handle), ["a"])
    assert.isTrue(third!.sacked)
    assert.lengthOf(
      stream.due(100, () => 100, 10),
      1,
      "2 is due again, 3 is not"
    )
    assert.isTrue(stream.cancel(second!))
    assert.strictEqual(stream.floor(), 3n)
    assert.isFalse(third!.sacked)
    assert.deepStrictEqual(
      stream.due(100, () => 100, 10),
      [third]
    )
  })

  it("expedite makes entries sent more than once and not SACKed due now, and leaves the rest alone", () => {
    const stream = new UnackedStream<string>(1n)
    const [first, second, third, fourth] = ["a", "b", "c", "d"].map((h) => stream.push(new Uint8Array(1), h))
    for (const entry of stream.due(0, () => 100, 10)) stream.markSent(entry, 0)
    // 1 and 2 went again (an outage), 3 was SACKed, 4 was sent once.
    stream.markSent(first!, 100)
    stream.markSent(second!, 100)
    const result = stream.onAck(0n, [{ first: 3n, last: 3n }])
    assert.isTrue("acked" in result)
    const slow = () => 10_000
    assert.deepStrictEqual(stream.due(200, slow, 10), [], "nothing due on the backed-off timers")
    stream.expedite()
    assert.deepStrictEqual(stream.due(200, slow, 10), [first, second])
    assert.isTrue(third!.sacked)
    assert.strictEqual(fourth!.sentAt, 0)
  })

  it("reads an entry's rto once per send, not on every call, however many entries wait", () => {
    const stream = new UnackedStream<number>(1n)
    let calls = 0
    const counting = () => {
      calls++
      return 200
    }
    for (let i = 0; i < 20_000; i++) stream.push(new Uint8Array(1), i)
    for (const entry of stream.due(0, counting, Number.POSITIVE_INFINITY)) stream.markSent(entry, 0)
    for (let now = 1; now < 200; now += 10) assert.lengthOf(stream.due(now, counting, 100), 0)
    assert.strictEqual(calls, 20_000)
    assert.strictEqual(stream.nextDue(counting), 200)
    const resent = stream.due(200, counting, 100)
    assert.deepStrictEqual(
      resent.map((e) => e.seq),
      range(1, 100)
    )
    for (const entry of resent) stream.markSent(entry, 200)
    // The rest stay due until sent; the 100 just sent wait for their new deadline.
    assert.deepStrictEqual(
      stream.due(205, counting, 100).map((e) => e.seq),
      range(101, 200)
    )
    assert.strictEqual(calls, 20_100)
  })
})

describe("UnackedStream and ReorderStream over a lossy channel", () => {
  interface Packet {
    readonly seq: bigint
    readonly floor: bigint
    readonly payload: number
    readonly at: number
  }

  it.prop(
    "deliver every message not cancelled exactly once, in order, and the sender drains",
    [
      fc.record({
        pushes: fc.array(fc.nat(3), { minLength: 1, maxLength: 30, size: "max" }),
        cancels: fc.array(fc.record({ round: fc.nat(40), pick: fc.nat() }), { maxLength: 8, size: "max" }),
        lossyRounds: fc.integer({ min: 0, max: 60 }),
        tape: fc.array(fc.nat(99), { minLength: 16, maxLength: 256, size: "max" }),
        maxRanges: fc.integer({ min: 1, max: 4 }),
        window: fc.integer({ min: 4, max: 64 })
      })
    ],
    ([{ pushes, cancels, lossyRounds, tape, maxRanges, window }]) => {
      let cursor = 0
      /** The next decision, 0..99, from the tape fast-check shrinks. */
      const roll = () => tape[cursor++ % tape.length]!
      const sender = new UnackedStream<number>(1n)
      const receiver = new ReorderStream<number>({
        window,
        gapTimeoutMillis: Number.MAX_SAFE_INTEGER,
        maxRanges
      })
      const entries: Array<Entry<number>> = []
      const cancelled = new Set<number>()
      const delivered: Array<number> = []
      let toReceiver: Array<Packet> = []
      let toSender: Array<AckState & { readonly at: number }> = []
      const senderRto = (entry: Entry<number>) => 30 * 2 ** Math.min(entry.sends - 1, 3)
      let round = 0
      for (; round < 600; round++) {
        const now = round * 10
        const lossy = round < lossyRounds
        /** Lost, or delivered 0..3 rounds later, sometimes twice. */
        const transmit = <A>(queue: Array<A & { readonly at: number }>, packet: A) => {
          if (lossy && roll() < 25) return
          queue.push({ ...packet, at: now + 10 * (roll() % 4) })
          if (lossy && roll() < 10) queue.push({ ...packet, at: now + 10 * (roll() % 4) })
        }
        for (let i = 0; i < (pushes[round] ?? 0); i++)
          entries.push(sender.push(new Uint8Array(1), entries.length))
        for (const { pick } of cancels.filter((c) => c.round === round)) {
          const live = [...sender.live()]
          if (live.length === 0) continue
          const entry = live[pick % live.length]!
          sender.cancel(entry)
          cancelled.add(entry.handle)
        }
        for (const entry of sender.due(now, senderRto, 16)) {
          transmit(toReceiver, { seq: entry.seq, floor: sender.floor(), payload: entry.handle })
          sender.markSent(entry, now)
        }
        // What arrives this round, in an order from the tape.
        const arriving = toReceiver.filter((p) => p.at <= now)
        for (let i = arriving.length - 1; i > 0; i--) {
          const j = roll() % (i + 1)
          ;[arriving[i], arriving[j]] = [arriving[j]!, arriving[i]!]
        }
        toReceiver = toReceiver.filter((p) => p.at > now)
        for (const packet of arriving) {
          const result = receiver.offer(1n, packet.seq, packet.floor, packet.payload, now)
          delivered.push(...result.deliver)
        }
        if (arriving.length > 0) transmit(toSender, receiver.ack()!)
        const acks = toSender.filter((a) => a.at <= now)
        toSender = toSender.filter((a) => a.at > now)
        for (const ack of acks) {
          const result = sender.onAck(ack.cumulative, ack.ranges)
          assert.isFalse(
            "_tag" in result,
            `the receiver's ack refused: ${JSON.stringify("_tag" in result && result)}`
          )
        }
        if (round >= pushes.length && sender.count === 0 && toReceiver.length === 0) break
      }
      assert.isBelow(
        round,
        600,
        `not drained: ${sender.count} live, floor ${sender.floor()}, receiver at ${receiver.next}`
      )
      assert.strictEqual(sender.count, 0)
      for (let i = 1; i < delivered.length; i++)
        assert.isBelow(delivered[i - 1]!, delivered[i]!, "in order, once")
      const wanted = entries.map((e) => e.handle).filter((h) => !cancelled.has(h))
      assert.deepStrictEqual(
        delivered.filter((h) => !cancelled.has(h)),
        wanted
      )
    }
  )
})
