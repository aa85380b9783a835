/**
 * The one fuzz engine of the repository: feeds a decoder random inputs and inputs mutated from valid
 * seeds, case after case, from one seed (case `i` of seed `s` is always the same input, so any case
 * replays alone: `FUZZ_SEED=s FUZZ_CASE=i`). A decoder must answer every input with a value or a
 * typed error: anything it throws is a crash finding. A target may also report a violation (a
 * property it checks failed, such as a decoded value that does not re-encode to its bytes).
 *
 * What "largest allocation" measures, per case, while the decoder runs (and only then):
 * - `largestAllocation`: the largest single buffer the JavaScript side asked for, through
 *   `Buffer.alloc`, `Buffer.allocUnsafe`, `Buffer.allocUnsafeSlow` (zlib's output and `Buffer.concat`
 *   go through these), `new Uint8Array(n | array | typed array)` and `new ArrayBuffer(n)` (views of
 *   an existing buffer are not allocations). Not counted: strings, plain arrays and objects, and
 *   memory native code takes without a JavaScript buffer (zlib's inflate state, OpenSSL).
 * - `largestCaseAllocation`: the most those buffers added up to in one case, and the largest ratio of
 *   that to the input's size (`amplification`).
 * - `largestOutput`: the bytes held by what the decoder returned (typed arrays by their length,
 *   views included, strings by their length, bigints as 8), walked to a bounded depth.
 * - `process`: the growth of the process's RSS, heap used and ArrayBuffer memory over the run,
 *   sampled every 2,048 cases (`process.memoryUsage()`): coarse, and the harness's own garbage counts.
 */
import { performance } from "node:perf_hooks"

// ---- randomness ----

/** A seeded source of randomness: floats in [0, 1). */
export type Random = () => number

/** mulberry32: small, fast and seeded, so that any case can be replayed from its seed. */
export const prng = (seed: number): Random => {
  let state = seed | 0
  return () => {
    state = (state + 0x6d2b79f5) | 0
    let t = Math.imul(state ^ (state >>> 15), 1 | state)
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

/** The seed of case `index` of a run seeded with `seed` (a 32-bit mix of both). */
export const caseSeed = (seed: number, index: number): number => {
  let h = Math.imul(seed ^ 0x9e3779b9, 0x85ebca6b) ^ Math.imul(index + 1, 0xc2b2ae35)
  h ^= h >>> 16
  h = Math.imul(h, 0x7feb352d)
  h ^= h >>> 15
  return h | 0
}

/** An integer in [0, n). */
export const int = (random: Random, n: number): number => Math.floor(random() * n)

const pick = <A>(random: Random, xs: ReadonlyArray<A>): A => xs[int(random, xs.length)]!

/** Random bytes, short lengths more likely than long ones. */
export const randomBytes = (random: Random, maxLength = 4096): Uint8Array => {
  const scale = pick(random, [16, 64, 256, maxLength])
  const out = new Uint8Array(int(random, Math.min(scale, maxLength) + 1))
  for (let i = 0; i < out.length; i++) out[i] = int(random, 256)
  return out
}

// ---- mutations ----

/** Context a mutator may use: the other seeds (for splicing) and the target's dictionary. */
export interface MutationContext {
  readonly seeds: ReadonlyArray<Uint8Array>
  readonly dictionary: ReadonlyArray<Uint8Array>
}

/** Turns one input into another. Must not modify `input`. */
export type Mutator = (input: Uint8Array, random: Random, context: MutationContext) => Uint8Array

const concat = (...parts: ReadonlyArray<Uint8Array>): Uint8Array => {
  let length = 0
  for (const part of parts) length += part.length
  const out = new Uint8Array(length)
  let at = 0
  for (const part of parts) {
    out.set(part, at)
    at += part.length
  }
  return out
}

/** `bytes` written over `input` at `at` (clipped at the end), or inserted there. */
const place = (input: Uint8Array, at: number, bytes: Uint8Array, insert: boolean): Uint8Array => {
  if (insert) return concat(input.subarray(0, at), bytes, input.subarray(at))
  const out = Uint8Array.from(input)
  out.set(bytes.subarray(0, Math.max(0, out.length - at)), at)
  return out
}

/** Unsigned LEB128, as the wire codec writes varints (no canonical check: overlong forms are wanted). */
export const leb128 = (value: bigint): Uint8Array => {
  const out: Array<number> = []
  do {
    const byte = Number(value & 0x7fn)
    value >>= 7n
    out.push(value > 0n ? byte | 0x80 : byte)
  } while (value > 0n)
  return Uint8Array.from(out)
}

/** Varints at and past every limit a decoder checks, and non-canonical ones. */
const HUGE_VARINTS: ReadonlyArray<Uint8Array> = [
  leb128(0x7fn),
  leb128(0x80n),
  leb128(0x3fffn),
  leb128(0xffffn),
  leb128(0x7fffffffn),
  leb128(0x80000000n),
  leb128(0xffffffffn),
  leb128(0x100000000n),
  leb128(2n ** 53n),
  leb128(2n ** 63n),
  leb128(2n ** 64n - 1n),
  leb128(2n ** 64n),
  Uint8Array.of(0x80, 0x00),
  Uint8Array.of(0xff, 0xff, 0xff, 0xff, 0x0f),
  Uint8Array.of(0xff, 0xff, 0xff, 0xff, 0x7f),
  Uint8Array.of(0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01),
  Uint8Array.of(0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01)
]

const INTERESTING_8 = [0x00, 0x01, 0x7f, 0x80, 0xff, 0xfe, 0x40, 0x20]
const INTERESTING_32 = [
  0, 1, 0x7f, 0x80, 0xff, 0xffff, 0x10000, 0x7fffffff, 0x80000000, 0xffffffff, 0xfffffffe
]

const u32be = (value: number, littleEndian: boolean): Uint8Array => {
  const out = new Uint8Array(4)
  new DataView(out.buffer).setUint32(0, value >>> 0, littleEndian)
  return out
}

const at = (input: Uint8Array, random: Random) => int(random, input.length + 1)

/** The generic mutations, each one step; `input` stacks a few. */
export const mutators: Readonly<Record<string, Mutator>> = {
  flipBits: (input, random) => {
    if (input.length === 0) return input
    const out = Uint8Array.from(input)
    for (let i = 0, n = 1 + int(random, 4); i < n; i++) out[int(random, out.length)]! ^= 1 << int(random, 8)
    return out
  },
  interestingByte: (input, random) => {
    if (input.length === 0) return input
    const out = Uint8Array.from(input)
    out[int(random, out.length)] = pick(random, INTERESTING_8)
    return out
  },
  randomByte: (input, random) => {
    if (input.length === 0) return input
    const out = Uint8Array.from(input)
    out[int(random, out.length)] = int(random, 256)
    return out
  },
  arithmetic: (input, random) => {
    if (input.length === 0) return input
    const out = Uint8Array.from(input)
    const i = int(random, out.length)
    out[i] = (out[i]! + (random() < 0.5 ? -1 : 1) * (1 + int(random, 16))) & 0xff
    return out
  },
  interestingU32: (input, random) => {
    const value = random() < 0.8 ? pick(random, INTERESTING_32) : input.length + int(random, 9) - 4
    return place(input, at(input, random), u32be(value, random() < 0.2), random() < 0.2)
  },
  hugeVarint: (input, random) => place(input, at(input, random), pick(random, HUGE_VARINTS), random() < 0.4),
  truncate: (input, random) => input.subarray(0, int(random, input.length + 1)),
  truncateEnd: (input, random) => input.subarray(0, Math.max(0, input.length - 1 - int(random, 8))),
  extend: (input, random) =>
    random() < 0.5
      ? concat(input, randomBytes(random, 64))
      : concat(input, new Uint8Array(1 + int(random, 4096)).fill(pick(random, INTERESTING_8))),
  deleteRun: (input, random) => {
    const from = at(input, random)
    return concat(input.subarray(0, from), input.subarray(Math.min(input.length, from + 1 + int(random, 32))))
  },
  insertRandom: (input, random) => place(input, at(input, random), randomBytes(random, 32), true),
  duplicateRun: (input, random) => {
    if (input.length === 0) return input
    const from = int(random, input.length)
    const run = input.subarray(from, Math.min(input.length, from + 1 + int(random, 64)))
    return place(input, at(input, random), run, random() < 0.7)
  },
  splice: (input, random, context) => {
    const other = pick(random, context.seeds)
    return concat(input.subarray(0, at(input, random)), other.subarray(int(random, other.length + 1)))
  },
  dictionary: (input, random, context) =>
    context.dictionary.length === 0
      ? input
      : place(input, at(input, random), pick(random, context.dictionary), random() < 0.5)
}

const GENERIC = Object.values(mutators)

// ---- targets ----

/** What a target made of one input. */
export interface Outcome {
  /** What became of it, counted per run: "ok", an error's tag, a refusal. */
  readonly label: string
  /** What the decoder returned, measured for `largestOutput`. */
  readonly output?: unknown
  /** A property the target checks failed: a finding, as a crash is. */
  readonly violation?: string | undefined
}

/** A decoder under fuzz. */
export interface Target {
  /** The decoder's name in reports. */
  readonly name: string
  /** Valid inputs (and interesting invalid ones) the mutations start from. */
  readonly seeds: ReadonlyArray<Uint8Array>
  /** Runs the decoder on one input. Must not throw: a throw is a crash. `random` is the case's own. */
  readonly run: (input: Uint8Array, random: Random) => Outcome
  /** Format-aware mutations (fix a length field, re-sign, re-compress), used beside the generic ones. */
  readonly mutators?: ReadonlyArray<Mutator>
  /** Byte strings that mean something to this format (tags, magic values), spliced into inputs. */
  readonly dictionary?: ReadonlyArray<Uint8Array>
  /** Labels a whole run must have produced (`missing` lists the others): proof the failure paths ran. */
  readonly expected?: ReadonlyArray<string>
  /** Cut inputs at this size (default 256 KiB). */
  readonly maxInputBytes?: number
}

/**
 * Input `index` of a run seeded with `seed`: random bytes (8%), dictionary words (4%), or a seed
 * mutated by one to four stacked mutations, a format-aware one chosen a third of the time.
 */
export const input = (target: Target, seed: number, index: number): { input: Uint8Array; random: Random } => {
  const random = prng(caseSeed(seed, index))
  const max = target.maxInputBytes ?? 256 * 1024
  const context: MutationContext = { seeds: target.seeds, dictionary: target.dictionary ?? [] }
  const roll = random()
  let bytes: Uint8Array
  if (roll < 0.08 || target.seeds.length === 0) bytes = randomBytes(random)
  else if (roll < 0.12 && context.dictionary.length > 0) {
    const words: Array<Uint8Array> = []
    for (let i = 0, n = 1 + int(random, 6); i < n; i++)
      words.push(random() < 0.7 ? pick(random, context.dictionary) : randomBytes(random, 16))
    bytes = concat(...words)
  } else {
    bytes = pick(random, target.seeds)
    const own = target.mutators ?? []
    for (let i = 0, n = 1 + int(random, 4); i < n; i++) {
      const mutator = own.length > 0 && random() < 0.33 ? pick(random, own) : pick(random, GENERIC)
      bytes = mutator(bytes, random, context)
      if (bytes.length > max) bytes = bytes.subarray(0, max)
    }
  }
  return { input: bytes, random }
}

// ---- allocation meter ----

const meter = { active: false, largest: 0, total: 0 }

const note = (size: unknown): void => {
  if (!meter.active || typeof size !== "number" || !(size > 0)) return
  meter.total += size
  if (size > meter.largest) meter.largest = size
}

const noteTyped = (first: unknown): void => {
  if (!meter.active) return
  if (typeof first === "number") note(first)
  else if (ArrayBuffer.isView(first)) note(first.byteLength)
  else if (Array.isArray(first)) note(first.length)
}

/**
 * Runs `f` with the meter paused: a target's own checks (re-encoding what was decoded, comparing with
 * a reference) are not the decoder's allocations.
 */
export const unmetered = <A>(f: () => A): A => {
  const was = meter.active
  meter.active = false
  try {
    return f()
  } finally {
    meter.active = was
  }
}

let installed = 0
let uninstall: (() => void) | undefined

/**
 * Wraps the buffer allocators (see the module comment) for as long as the returned function is not
 * called. They count only while a case runs; in between they cost one check.
 */
const installMeter = (): (() => void) => {
  if (installed++ === 0) {
    const B = Buffer as unknown as Record<string, (...args: Array<unknown>) => unknown>
    const original = { alloc: B.alloc!, allocUnsafe: B.allocUnsafe!, allocUnsafeSlow: B.allocUnsafeSlow! }
    for (const name of ["alloc", "allocUnsafe", "allocUnsafeSlow"] as const) {
      const f = original[name]
      B[name] = function (this: unknown, size: unknown, ...rest: Array<unknown>) {
        note(size)
        return f.call(this, size, ...rest)
      }
    }
    const g = globalThis as unknown as Record<string, unknown>
    const U8 = globalThis.Uint8Array
    const AB = globalThis.ArrayBuffer
    const u8: typeof Uint8Array = new Proxy(U8, {
      construct(target, args, newTarget) {
        noteTyped(args[0])
        return Reflect.construct(target, args, newTarget === u8 ? target : newTarget)
      }
    })
    const ab: typeof ArrayBuffer = new Proxy(AB, {
      construct(target, args, newTarget) {
        note(args[0])
        return Reflect.construct(target, args, newTarget === ab ? target : newTarget)
      }
    })
    g.Uint8Array = u8
    g.ArrayBuffer = ab
    uninstall = () => {
      Object.assign(B, original)
      g.Uint8Array = U8
      g.ArrayBuffer = AB
    }
  }
  return () => {
    if (--installed === 0) uninstall?.()
  }
}

/** Bytes held by a decoder's result: typed arrays by length, strings by length, bigints as 8. */
export const retainedBytes = (value: unknown, budget = 10_000): number => {
  let nodes = 0
  const seen = new Set<unknown>()
  const walk = (v: unknown, depth: number): number => {
    if (++nodes > budget || depth > 12) return 0
    if (typeof v === "string") return v.length
    if (typeof v === "bigint") return 8
    if (typeof v !== "object" || v === null) return 0
    if (ArrayBuffer.isView(v)) return v.byteLength
    if (seen.has(v)) return 0
    seen.add(v)
    let sum = 0
    if (Array.isArray(v)) for (const x of v) sum += walk(x, depth + 1)
    else for (const key of Object.keys(v)) sum += walk((v as Record<string, unknown>)[key], depth + 1)
    return sum
  }
  return walk(value, 0)
}

// ---- runs ----

export interface Finding {
  readonly kind: "crash" | "violation"
  /** The case's index: replay it with FUZZ_SEED=seed FUZZ_CASE=case. */
  readonly case: number
  readonly inputBytes: number
  /** The input in hex, cut at 4 KiB of input. */
  readonly inputHex: string
  /** The thrown error's stack, or the violation. */
  readonly error: string
}

export interface Report {
  readonly fuzz: string
  readonly seed: number
  readonly requested: number
  readonly cases: number
  /** The run stopped at its deadline before `requested` cases. */
  readonly stoppedEarly: boolean
  readonly ms: number
  readonly casesPerSecond: number
  readonly crashes: number
  readonly violations: number
  /** The first findings (up to `maxFindings`), one per distinct error. */
  readonly findings: ReadonlyArray<Finding>
  readonly outcomes: Readonly<Record<string, number>>
  /** Expected labels that no case produced. */
  readonly missing: ReadonlyArray<string>
  readonly largestAllocation: { readonly bytes: number; readonly case: number; readonly inputBytes: number }
  readonly largestCaseAllocation: {
    readonly bytes: number
    readonly case: number
    readonly inputBytes: number
    readonly amplification: { readonly ratio: number; readonly bytes: number; readonly case: number }
  }
  readonly largestOutput: { readonly bytes: number; readonly case: number }
  readonly largestInput: number
  readonly slowestCase: { readonly ms: number; readonly case: number; readonly inputBytes: number }
  readonly process: {
    readonly rssGrowth: number
    readonly heapUsedGrowth: number
    readonly arrayBuffersGrowth: number
  }
}

export interface RunOptions {
  readonly cases: number
  readonly seed: number
  /** Stop (with `stoppedEarly`) at this `Date.now()`, checked between cases. */
  readonly deadline?: number
  /** Findings kept in full (default 10). */
  readonly maxFindings?: number
  /** Run only this case (replay). */
  readonly only?: number
  /** The index of the first case (default 0): a long run done in slices continues where the last stopped. */
  readonly first?: number
  /** Wrap the allocators (default true); false runs the same cases unmeasured. */
  readonly meter?: boolean
}

const hexOf = (bytes: Uint8Array, maxBytes = 4096): string =>
  Buffer.from(bytes.buffer, bytes.byteOffset, Math.min(bytes.byteLength, maxBytes)).toString("hex")

/** Where a throw came from: its message and first frame, to tell distinct crashes apart. */
const signature = (error: unknown): string => {
  const stack = (error as Error)?.stack ?? String(error)
  const lines = stack.split("\n")
  return `${lines[0]} ${lines.find((l) => l.trim().startsWith("at ")) ?? ""}`
}

/** Runs `options.cases` cases of `target`. Never throws for the decoder's sake: throws are findings. */
export const run = (target: Target, options: RunOptions): Report => {
  const { seed } = options
  const maxFindings = options.maxFindings ?? 10
  const first = options.only ?? options.first ?? 0
  const requested = options.only === undefined ? options.cases : 1
  const outcomes: Record<string, number> = {}
  const findings: Array<Finding> = []
  const distinct = new Set<string>()
  let crashes = 0
  let violations = 0
  let largestAllocation = { bytes: 0, case: -1, inputBytes: 0 }
  let largestCase = { bytes: 0, case: -1, inputBytes: 0 }
  let amplification = { ratio: 0, bytes: 0, case: -1 }
  let largestOutput = { bytes: 0, case: -1 }
  let largestInput = 0
  let slowest = { ms: 0, case: -1, inputBytes: 0 }
  const base = process.memoryUsage()
  const peak = { rss: base.rss, heapUsed: base.heapUsed, arrayBuffers: base.arrayBuffers }
  const sampleMemory = () => {
    const m = process.memoryUsage()
    if (m.rss > peak.rss) peak.rss = m.rss
    if (m.heapUsed > peak.heapUsed) peak.heapUsed = m.heapUsed
    if (m.arrayBuffers > peak.arrayBuffers) peak.arrayBuffers = m.arrayBuffers
  }
  const record = (kind: Finding["kind"], index: number, bytes: Uint8Array, error: unknown) => {
    if (kind === "crash") crashes++
    else violations++
    const key = kind === "crash" ? signature(error) : String(error)
    if (findings.length >= maxFindings || distinct.has(key)) return
    distinct.add(key)
    findings.push({
      kind,
      case: index,
      inputBytes: bytes.length,
      inputHex: hexOf(bytes),
      error: kind === "crash" ? ((error as Error)?.stack ?? String(error)) : String(error)
    })
  }

  // Decoders must not write to their input (a socket's chunk): inputs are often views of the seeds.
  const seedsBefore = target.seeds.map((s) => hexOf(s, Number.POSITIVE_INFINITY)).join()
  const release = options.meter === false ? () => {} : installMeter()
  const started = performance.now()
  let cases = 0
  let stoppedEarly = false
  try {
    for (; cases < requested; cases++) {
      if ((cases & 0x7ff) === 0) {
        sampleMemory()
        if (options.deadline !== undefined && Date.now() >= options.deadline) {
          stoppedEarly = true
          break
        }
      }
      const index = first + cases
      const { input: bytes, random } = input(target, seed, index)
      if (bytes.length > largestInput) largestInput = bytes.length
      meter.largest = 0
      meter.total = 0
      let outcome: Outcome | undefined
      let thrown: unknown
      let threw = false
      const t0 = performance.now()
      meter.active = true
      try {
        outcome = target.run(bytes, random)
      } catch (e) {
        threw = true
        thrown = e
      } finally {
        meter.active = false
      }
      const ms = performance.now() - t0
      if (ms > slowest.ms) slowest = { ms, case: index, inputBytes: bytes.length }
      if (meter.largest > largestAllocation.bytes) {
        largestAllocation = { bytes: meter.largest, case: index, inputBytes: bytes.length }
      }
      if (meter.total > largestCase.bytes)
        largestCase = { bytes: meter.total, case: index, inputBytes: bytes.length }
      const ratio = meter.total / Math.max(1, bytes.length)
      if (ratio > amplification.ratio) amplification = { ratio, bytes: meter.total, case: index }
      if (threw) {
        outcomes.crash = (outcomes.crash ?? 0) + 1
        record("crash", index, bytes, thrown)
        continue
      }
      const label = outcome!.label
      outcomes[label] = (outcomes[label] ?? 0) + 1
      if (outcome!.violation !== undefined) record("violation", index, bytes, outcome!.violation)
      if (outcome!.output !== undefined) {
        const held = retainedBytes(outcome!.output)
        if (held > largestOutput.bytes) largestOutput = { bytes: held, case: index }
      }
    }
  } finally {
    release()
  }
  sampleMemory()
  const ms = performance.now() - started
  if (target.seeds.map((s) => hexOf(s, Number.POSITIVE_INFINITY)).join() !== seedsBefore) {
    record("violation", -1, new Uint8Array(0), "a seed changed during the run: a decoder wrote to its input")
  }
  return {
    fuzz: target.name,
    seed,
    requested,
    cases,
    stoppedEarly,
    ms: Math.round(ms),
    casesPerSecond: Math.round(cases / (ms / 1000)),
    crashes,
    violations,
    findings,
    outcomes,
    missing: options.only === undefined ? (target.expected ?? []).filter((label) => !outcomes[label]) : [],
    largestAllocation,
    largestCaseAllocation: {
      ...largestCase,
      amplification: { ...amplification, ratio: Math.round(amplification.ratio * 10) / 10 }
    },
    largestOutput,
    largestInput,
    slowestCase: { ...slowest, ms: Math.round(slowest.ms * 100) / 100 },
    process: {
      rssGrowth: peak.rss - base.rss,
      heapUsedGrowth: peak.heapUsed - base.heapUsed,
      arrayBuffersGrowth: peak.arrayBuffers - base.arrayBuffers
    }
  }
}

/**
 * What is wrong with a run, as sentences (empty when nothing is): crashes and violations with their
 * first input, expected labels never produced, a run its deadline stopped short.
 */
export const problems = (report: Report): Array<string> => {
  const out: Array<string> = []
  for (const f of report.findings) {
    out.push(
      `${report.fuzz}: ${f.kind} in case ${f.case} (seed ${report.seed}; replay with FUZZ_SEED=${report.seed} ` +
        `FUZZ_CASE=${f.case}), ${f.inputBytes} input bytes ${f.inputHex.slice(0, 400)}: ${f.error}`
    )
  }
  if (report.crashes + report.violations > report.findings.length) {
    out.push(`${report.fuzz}: ${report.crashes} crashes and ${report.violations} violations in all`)
  }
  if (report.stoppedEarly) {
    out.push(
      `${report.fuzz}: the deadline stopped the run after ${report.cases} of ${report.requested} cases in ` +
        `${report.ms} ms (seed ${report.seed})`
    )
  }
  if (!report.stoppedEarly && report.missing.length > 0) {
    out.push(
      `${report.fuzz}: no case produced ${report.missing.join(", ")} (outcomes: ${JSON.stringify(report.outcomes)})`
    )
  }
  return out
}

/** Settings from the environment, shared by the `fuzz` scripts and the bounded tests. */
export const settings = (defaults: { cases: number; seed?: number }) => {
  const cases = Number(process.env.FUZZ_CASES ?? defaults.cases)
  const seed = Number(process.env.FUZZ_SEED ?? defaults.seed ?? 20261124)
  const only = process.env.FUZZ_CASE === undefined ? undefined : Number(process.env.FUZZ_CASE)
  const names = process.env.FUZZ_ONLY?.split(",").filter((n) => n !== "")
  if (!Number.isSafeInteger(cases) || cases < 1) throw new Error(`FUZZ_CASES must be a positive integer`)
  if (!Number.isSafeInteger(seed)) throw new Error(`FUZZ_SEED must be an integer`)
  return { cases, seed, only, names, meter: process.env.FUZZ_METER !== "0" }
}

const findingKey = (f: Finding): string =>
  f.kind === "crash" ? `crash ${signature({ stack: f.error })}` : `violation ${f.error}`

const larger = <T extends { readonly bytes: number }>(a: T, b: T): T => (b.bytes > a.bytes ? b : a)

/** Two reports of consecutive slices of one run as one: counts summed, maxima kept, findings joined. */
export const merge = (a: Report, b: Report, maxFindings = 10): Report => {
  const outcomes: Record<string, number> = { ...a.outcomes }
  for (const [label, n] of Object.entries(b.outcomes)) outcomes[label] = (outcomes[label] ?? 0) + n
  const ms = a.ms + b.ms
  const cases = a.cases + b.cases
  return {
    ...a,
    requested: a.requested + b.requested,
    cases,
    stoppedEarly: a.stoppedEarly || b.stoppedEarly,
    ms,
    casesPerSecond: Math.round(cases / (Math.max(1, ms) / 1000)),
    crashes: a.crashes + b.crashes,
    violations: a.violations + b.violations,
    // One finding per distinct error, as within a run.
    findings: [...a.findings, ...b.findings]
      .filter((f, i, all) => all.findIndex((g) => findingKey(g) === findingKey(f)) === i)
      .slice(0, maxFindings),
    outcomes,
    missing: a.missing.filter((label) => !outcomes[label]),
    largestAllocation: larger(a.largestAllocation, b.largestAllocation),
    largestCaseAllocation: {
      ...larger(a.largestCaseAllocation, b.largestCaseAllocation),
      amplification:
        b.largestCaseAllocation.amplification.ratio > a.largestCaseAllocation.amplification.ratio
          ? b.largestCaseAllocation.amplification
          : a.largestCaseAllocation.amplification
    },
    largestOutput: larger(a.largestOutput, b.largestOutput),
    largestInput: Math.max(a.largestInput, b.largestInput),
    slowestCase: b.slowestCase.ms > a.slowestCase.ms ? b.slowestCase : a.slowestCase,
    process: {
      rssGrowth: Math.max(a.process.rssGrowth, b.process.rssGrowth),
      heapUsedGrowth: Math.max(a.process.heapUsedGrowth, b.process.heapUsedGrowth),
      arrayBuffersGrowth: Math.max(a.process.arrayBuffersGrowth, b.process.arrayBuffersGrowth)
    }
  }
}

/** Cases run between two turns of the event loop in `runSliced`. */
const SLICE = 2_000

/**
 * `run` in slices of a few thousand cases with a turn of the event loop between them: the same cases
 * and the same report, but the process stays responsive (a test runner's worker answers its RPCs; a
 * 100,000-case run in one synchronous stretch made vitest's worker time out on a loaded machine).
 */
export const runSliced = async (target: Target, options: RunOptions): Promise<Report> => {
  if (options.only !== undefined) return run(target, options)
  let report: Report | undefined
  for (let done = 0; done < options.cases; ) {
    const slice = run(target, {
      ...options,
      first: (options.first ?? 0) + done,
      cases: Math.min(SLICE, options.cases - done)
    })
    report = report === undefined ? slice : merge(report, slice, options.maxFindings)
    done += slice.cases
    if (slice.stoppedEarly) break
    await new Promise((resolve) => setImmediate(resolve))
  }
  return report!
}

/** Bounded work, not a timing check: room for a loaded 2-core CI machine. */
const TEST_TIMEOUT_MS = 180_000
/**
 * The loop stops here, well before the test's timeout, so that a run that is too slow (or a decoder
 * that got slow) fails with how far it got, instead of being cut by the runner.
 */
const HANG_GUARD_MS = TEST_TIMEOUT_MS * 0.8

/** What `suite` needs of the test runner (vitest's `describe` and `it`): this package imports none. */
export interface TestRunner {
  readonly describe: (name: string, body: () => void) => void
  readonly it: (name: string, body: () => void | Promise<void>, timeout?: number) => void
}

/**
 * The bounded run of every package's `npm test`: one test per target, `FUZZ_CASES` cases (default
 * 10^5) from `FUZZ_SEED`. A test fails on a crash, a violated property, an outcome never reached,
 * or a run stopped by its hang guard before its cases were done.
 */
export const suite = (targets: ReadonlyArray<Target>, runner: TestRunner): void => {
  const { cases, seed } = settings({ cases: 100_000 })
  runner.describe("fuzz", () => {
    for (const target of targets) {
      runner.it(
        `${target.name}: ${cases} random and mutated inputs: no throw, its properties hold, every outcome reached (seed ${seed})`,
        async () => {
          const report = await runSliced(target, { cases, seed, deadline: Date.now() + HANG_GUARD_MS })
          if (process.env.FUZZ_REPORT) console.log(JSON.stringify(report))
          const found = problems(report)
          if (found.length > 0) throw new Error(found.join("\n"))
          if (report.cases !== cases) throw new Error(`${target.name}: ran ${report.cases} of ${cases} cases`)
        },
        TEST_TIMEOUT_MS
      )
    }
  })
}

/** Memory after full collections and a pause (ArrayBuffers are freed behind the collector), when --expose-gc. */
const settledMemory = async (): Promise<NodeJS.MemoryUsage | undefined> => {
  const gc = (globalThis as { gc?: () => void }).gc
  if (gc === undefined) return undefined
  for (let i = 0; i < 3; i++) {
    gc()
    await new Promise((resolve) => setTimeout(resolve, 200))
  }
  return process.memoryUsage()
}

/**
 * The `npm run fuzz` entry: runs every target (or FUZZ_ONLY's) for FUZZ_CASES cases (default 10^6)
 * and prints one JSON line per target; with FUZZ_CASE, replays that one case and prints its input in
 * full. Under --expose-gc each line also says what the run left behind after full collections
 * (`retainedAfterGc`, bytes: growth the decoder would keep, as opposed to `process`, its garbage
 * included). Sets a non-zero exit code on any crash or violation.
 */
export const main = async (targets: ReadonlyArray<Target>): Promise<void> => {
  const { cases, seed, only, names, meter } = settings({ cases: 1_000_000 })
  let failed = false
  for (const target of targets) {
    if (names !== undefined && !names.includes(target.name)) continue
    const before = await settledMemory()
    const report =
      only === undefined ? run(target, { cases, seed, meter }) : run(target, { cases: 1, seed, only, meter })
    const after = await settledMemory()
    const retainedAfterGc =
      before === undefined || after === undefined
        ? undefined
        : {
            rss: after.rss - before.rss,
            heapUsed: after.heapUsed - before.heapUsed,
            arrayBuffers: after.arrayBuffers - before.arrayBuffers
          }
    process.stdout.write(`${JSON.stringify({ ...report, retainedAfterGc })}\n`)
    if (only !== undefined) {
      process.stdout.write(
        `${JSON.stringify({ fuzz: target.name, case: only, input: hexOf(input(target, seed, only).input, Number.POSITIVE_INFINITY) })}\n`
      )
    }
    if (report.crashes + report.violations > 0) {
      failed = true
      for (const line of problems(report)) process.stderr.write(`${line}\n`)
    }
  }
  if (failed) process.exitCode = 1
}
