// The wire field vocabulary: each field is a Schema (what the value is) and its canonical binary
// form (how it crosses the wire), declared together so the two never drift apart. Message.ts builds
// every message from these; Codec.ts compiles them; WIRE.md documents the same vocabulary.
import * as Arbitrary from "effect/Arbitrary"
import * as Option from "effect/Option"
import * as Schema from "effect/Schema"
import type * as AST from "effect/SchemaAST"
import { PeerId } from "../Identity.js"
import { DecodeFailure, fail, type Reader, u32Size, u64Size, type Writer } from "./binary.js"
import { type Emitter, InlineCheck } from "./compiled.js"
import { rawPeerId, rememberPeerId } from "./peerIds.js"
import { compile, type Predicate } from "./validator.js"

export interface Field<S extends Schema.Schema.Any> {
  readonly schema: S
  /** The wire form in WIRE.md's vocabulary, e.g. `u64`, `bytes[32]`, `list<Block> (max 1024)`. */
  readonly spec: string
  /** The smallest number of bytes an encoded value takes: bounds list counts before allocation. */
  readonly minSize: number
  readonly size: (value: Schema.Schema.Type<S>) => number
  readonly write: (writer: Writer, value: Schema.Schema.Type<S>) => void
  readonly read: (reader: Reader) => Schema.Schema.Type<S>
  /** The same read, size and write as generated code (internal/compiled.ts). */
  readonly emit: Emitter
}

export type AnyField = Field<Schema.Schema.Any>
export type Fields = { readonly [name: string]: AnyField }
export type SchemaFields<F extends Fields> = { readonly [K in keyof F]: F[K]["schema"] }

export const U64_MAX = 2n ** 64n - 1n

export const u64: Field<Schema.SchemaClass<bigint>> = {
  schema: Schema.BigIntFromSelf.pipe(
    Schema.betweenBigInt(0n, U64_MAX, {
      identifier: "U64",
      description: "an unsigned 64-bit integer",
      [InlineCheck]: ((v) => `(${v} >= 0n && ${v} <= ${U64_MAX}n)`) satisfies InlineCheck
    })
  ) as unknown as Schema.SchemaClass<bigint>,
  spec: "u64",
  minSize: 1,
  size: u64Size,
  write: (w, v) => w.u64(v),
  read: (r) => r.u64(),
  emit: {
    read: () => "r.u64()",
    size: (g, v) => `${g.ref(u64Size)}(${v})`,
    write: (_, v) => `w.u64(${v});`,
    residual: () => undefined
  }
}

export const u32: Field<Schema.SchemaClass<number>> = {
  schema: Schema.Number.pipe(
    Schema.int({ [InlineCheck]: ((v) => `Number.isSafeInteger(${v})`) satisfies InlineCheck }),
    Schema.between(0, 0xffffffff, {
      identifier: "U32",
      description: "an unsigned 32-bit integer",
      [InlineCheck]: ((v) => `(${v} >= 0 && ${v} <= 4294967295)`) satisfies InlineCheck
    })
  ) as unknown as Schema.SchemaClass<number>,
  spec: "u32",
  minSize: 1,
  size: u32Size,
  write: (w, v) => w.u32(v),
  read: (r) => r.u32(),
  emit: {
    read: () => "r.u32()",
    size: (g, v) => `${g.ref(u32Size)}(${v})`,
    write: (_, v) => `w.u32(${v});`,
    residual: () => undefined
  }
}

const uint8ArrayArbitrary = (minLength: number, maxLength: number) => () => (fc: any) =>
  fc.uint8Array({ minLength, maxLength })

export const fixedBytes = (length: number, identifier: string): Field<Schema.SchemaClass<Uint8Array>> => ({
  schema: Schema.Uint8ArrayFromSelf.pipe(
    Schema.filter((b) => b.length === length || `expected exactly ${length} bytes, got ${b.length}`, {
      identifier,
      arbitrary: uint8ArrayArbitrary(length, length),
      [InlineCheck]: ((v) => `${v}.length === ${length}`) satisfies InlineCheck
    })
  ) as unknown as Schema.SchemaClass<Uint8Array>,
  spec: `bytes[${length}]`,
  minSize: length,
  size: () => length,
  write: (w, v) => w.bytes(v),
  read: (r) => r.bytes(length),
  emit: {
    read: () => `r.bytes(${length})`,
    fixedSize: length,
    size: () => String(length),
    write: (_, v) => `w.bytes(${v});`,
    residual: () => undefined
  }
})

export const hash = fixedBytes(32, "Hash")
export const signature = fixedBytes(64, "Signature")

// Buffer's own hex routines, called on any Uint8Array: no Buffer view is made per PeerId.
const hexSlice = (Buffer.prototype as unknown as { hexSlice: (start: number, end: number) => string })
  .hexSlice
const hexWrite = (
  Buffer.prototype as unknown as { hexWrite: (s: string, offset: number, length: number) => number }
).hexWrite

// Undocumented in Node's API (present since Node 10): fall back to a Buffer view if it ever goes.
const readPeerId: (r: Reader) => PeerId =
  typeof hexSlice === "function"
    ? (r) => {
        const at = r.skip(32)
        return hexSlice.call(r.buf, at, at + 32) as PeerId
      }
    : (r) => {
        const at = r.skip(32)
        return Buffer.from(r.buf.buffer, r.buf.byteOffset + at, 32).toString("hex") as PeerId
      }

/** Called only with a PeerId that passed its Schema. */
const writePeerId = (w: Writer, v: string): void => {
  const raw = rawPeerId(v)
  if (raw !== undefined) {
    w.buf.set(raw, w.pos)
  } else {
    if (typeof hexWrite === "function") hexWrite.call(w.buf, v, w.pos, 32)
    else w.buf.set(Buffer.from(v, "hex"), w.pos)
    rememberPeerId(v, w.buf.subarray(w.pos, w.pos + 32))
  }
  w.pos += 32
}

/** A PeerId: 32 raw bytes on the wire, 64 hex characters in memory. */
export const peerId: Field<typeof PeerId> = {
  schema: PeerId,
  spec: "peer_id",
  minSize: 32,
  size: () => 32,
  write: (w, v) => writePeerId(w, v),
  read: (r) => readPeerId(r),
  emit: {
    read: (g) => `${g.ref(readPeerId)}(r)`,
    fixedSize: 32,
    size: () => "32",
    write: (g, v) => `${g.ref(writePeerId)}(w, ${v});`,
    // 32 bytes always make 64 lowercase hex characters.
    residual: () => undefined
  }
}

/** Length-prefixed bytes. `arbitraryMax` keeps generated test values small when `max` is huge. */
export const bytes = (
  max: number,
  arbitraryMax = Math.min(max, 512)
): Field<Schema.SchemaClass<Uint8Array>> => ({
  schema: Schema.Uint8ArrayFromSelf.pipe(
    Schema.filter((b) => b.length <= max || `expected at most ${max} bytes, got ${b.length}`, {
      arbitrary: uint8ArrayArbitrary(0, arbitraryMax),
      [InlineCheck]: ((v) => `${v}.length <= ${max}`) satisfies InlineCheck
    })
  ) as unknown as Schema.SchemaClass<Uint8Array>,
  spec: `bytes (max ${max})`,
  minSize: 1,
  size: (v) => u32Size(v.length) + v.length,
  write: (w, v) => w.lengthPrefixed(v),
  read: (r) => r.lengthPrefixed(max),
  emit: {
    read: () => `r.lengthPrefixed(${max})`,
    size: (g, v) => `(${g.ref(u32Size)}(${v}.length) + ${v}.length)`,
    write: (_, v) => `w.lengthPrefixed(${v});`,
    residual: () => undefined
  }
})

const utf8Decoder = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true })
const utf8Encoder = new TextEncoder()

/** A UTF-8 string, length-prefixed, at most `max` bytes once encoded. */
export const utf8 = (max: number): Field<Schema.SchemaClass<string>> => {
  const size = (v: string) => {
    const n = Buffer.byteLength(v, "utf8")
    return u32Size(n) + n
  }
  const write = (w: Writer, v: string) => {
    w.u32(Buffer.byteLength(v, "utf8"))
    w.pos += utf8Encoder.encodeInto(v, w.buf.subarray(w.pos)).written
  }
  const read = (r: Reader) => {
    const at = r.pos
    const raw = r.lengthPrefixed(max)
    try {
      return utf8Decoder.decode(raw)
    } catch {
      return fail(at, "invalid UTF-8")
    }
  }
  return {
    schema: Schema.String.pipe(
      Schema.filter(
        (s) =>
          !wellFormed(s)
            ? "expected well-formed Unicode (no lone surrogates)"
            : Buffer.byteLength(s, "utf8") <= max || `expected at most ${max} bytes of UTF-8`,
        { arbitrary: () => (fc: any) => fc.string({ maxLength: Math.floor(max / 4), unit: "binary" }) }
      )
    ) as unknown as Schema.SchemaClass<string>,
    spec: `utf8 (max ${max} bytes)`,
    minSize: 1,
    size,
    write,
    read,
    emit: {
      read: (g) => `${g.ref(read)}(r)`,
      size: (g, v) => `${g.ref(size)}(${v})`,
      write: (g, v) => `${g.ref(write)}(w, ${v});`,
      // The fatal decoder accepts only well-formed UTF-8, which decodes to well-formed Unicode that
      // re-encodes to the same (at most `max`) bytes.
      residual: () => undefined
    }
  }
}

/** Strings must be well-formed Unicode so that they round-trip byte for byte through UTF-8. */
const wellFormed = (s: string): boolean => !/\p{Surrogate}/u.test(s)

/** A count-prefixed list of at most `max` items. */
export const list = <S extends Schema.Schema.Any>(
  item: Field<S>,
  max: number,
  arbitraryMax = Math.min(max, 8)
): Field<Schema.SchemaClass<ReadonlyArray<Schema.Schema.Type<S>>>> => ({
  schema: (Schema.Array(item.schema) as unknown as Schema.Schema<ReadonlyArray<unknown>>).pipe(
    Schema.maxItems(max, {
      [InlineCheck]: ((v) => `${v}.length <= ${max}`) satisfies InlineCheck,
      arbitrary: () => (fc: any) =>
        fc.array(Arbitrary.makeLazy(item.schema as unknown as Schema.Schema<unknown>)(fc), {
          maxLength: arbitraryMax
        })
    })
  ) as unknown as Schema.SchemaClass<ReadonlyArray<Schema.Schema.Type<S>>>,
  spec: `list<${item.spec}> (max ${max})`,
  minSize: 1,
  size: (v) => {
    let n = u32Size(v.length)
    for (let i = 0; i < v.length; i++) n += item.size(v[i])
    return n
  },
  write: (w, v) => {
    w.u32(v.length)
    for (let i = 0; i < v.length; i++) item.write(w, v[i])
  },
  read: (r) => {
    const at = r.pos
    const count = r.u32()
    if (count > max) fail(at, `count ${count} exceeds the limit of ${max}`)
    // Refuse counts the remaining bytes cannot hold before allocating anything for them.
    if (count * item.minSize > r.remaining) {
      fail(at, `count ${count} cannot fit in the ${r.remaining} bytes left`)
    }
    const out = new Array(count)
    for (let i = 0; i < count; i++) {
      try {
        out[i] = item.read(r)
      } catch (e) {
        if (e instanceof DecodeFailure) e.path.unshift(String(i))
        throw e
      }
    }
    return out
  },
  emit: listEmitter(item, max)
})

const listEmitter = (item: AnyField, max: number): Emitter => ({
  read: (g) =>
    `${g.fn(
      "r",
      `const at = r.pos
const count = r.u32()
if (count > ${max} || count * ${item.minSize} > r.remaining) ${g.ref(fail)}(at, "list count")
const out = new Array(count)
for (let i = 0; i < count; i++) out[i] = ${item.emit.read(g)}
return out`
    )}(r)`,
  size: (g, v) => {
    const fixed = item.emit.fixedSize
    if (fixed !== undefined) return `(${g.ref(u32Size)}(${v}.length) + ${v}.length * ${fixed})`
    return `${g.fn(
      "v",
      `let n = ${g.ref(u32Size)}(v.length)
for (let i = 0; i < v.length; i++) {
  const x = v[i]
  n += ${item.emit.size(g, "x")}
}
return n`
    )}(${v})`
  },
  write: (g, v) =>
    `${g.fn(
      "w, v",
      `w.u32(v.length)
for (let i = 0; i < v.length; i++) {
  const x = v[i]
  ${item.emit.write(g, "x")}
}`
    )}(w, ${v});`,
  residual: (g, v) => {
    const inner = item.emit.residual(g, "x")
    if (inner === undefined) return undefined
    return `${g.fn(
      "v",
      `for (let i = 0; i < v.length; i++) {
  const x = v[i]
  if (!(${inner})) return false
}
return true`
    )}(${v})`
  }
})

/** An optional value: one byte 0x00 (none) or 0x01 (some) followed by the value. */
export const option = <S extends Schema.Schema.Any>(item: Field<S>): Field<Schema.OptionFromSelf<S>> => ({
  schema: Schema.OptionFromSelf(item.schema),
  spec: `option<${item.spec}>`,
  minSize: 1,
  size: (v) => (Option.isSome(v) ? 1 + item.size(v.value) : 1),
  write: (w, v) => {
    if (Option.isSome(v)) {
      w.u8(1)
      item.write(w, v.value)
    } else {
      w.u8(0)
    }
  },
  read: (r) => {
    const at = r.pos
    const flag = r.u8()
    if (flag === 0) return Option.none()
    if (flag === 1) return Option.some(item.read(r))
    return fail(at, `option flag must be 0 or 1, got ${flag}`)
  },
  emit: optionEmitter(item)
})

const optionEmitter = (item: AnyField): Emitter => ({
  read: (g) =>
    `${g.fn(
      "r",
      `const at = r.pos
const flag = r.u8()
if (flag === 0) return ${g.ref(Option.none)}()
if (flag === 1) return ${g.ref(Option.some)}(${item.emit.read(g)})
return ${g.ref(fail)}(at, "option flag")`
    )}(r)`,
  size: (g, v) =>
    `${g.fn("v", `return ${g.ref(Option.isSome)}(v) ? 1 + ${item.emit.size(g, "v.value")} : 1`)}(${v})`,
  write: (g, v) =>
    `${g.fn(
      "w, v",
      `if (${g.ref(Option.isSome)}(v)) {
  w.u8(1)
  ${item.emit.write(g, "v.value")}
} else {
  w.u8(0)
}`
    )}(w, ${v});`,
  residual: (g, v) => {
    const inner = item.emit.residual(g, "v.value")
    if (inner === undefined) return undefined
    return `${g.fn("v", `return !${g.ref(Option.isSome)}(v) || (${inner})`)}(${v})`
  }
})

export const structSize = <F extends Fields>(fields: F, names: ReadonlyArray<string>, value: any): number => {
  let n = 0
  for (let i = 0; i < names.length; i++) n += fields[names[i]!]!.size(value[names[i]!])
  return n
}

export const structWrite = <F extends Fields>(
  fields: F,
  names: ReadonlyArray<string>,
  w: Writer,
  value: any
): void => {
  for (let i = 0; i < names.length; i++) fields[names[i]!]!.write(w, value[names[i]!])
}

export const structRead = <F extends Fields>(
  fields: F,
  names: ReadonlyArray<string>,
  r: Reader,
  into: Record<string, unknown>
): void => {
  let i = 0
  try {
    for (; i < names.length; i++) into[names[i]!] = fields[names[i]!]!.read(r)
  } catch (e) {
    if (e instanceof DecodeFailure) e.path.unshift(names[i]!)
    throw e
  }
}

/** A nested struct without a tag (e.g. `Block` inside `Proposal`). */
export const struct = <F extends Fields>(
  identifier: string,
  fields: F
): Field<Schema.Struct<SchemaFields<F>>> & { readonly fields: F } => {
  const names = Object.keys(fields)
  let minSize = 0
  for (const name of names) minSize += fields[name]!.minSize
  return {
    fields,
    schema: Schema.Struct(
      Object.fromEntries(names.map((n) => [n, fields[n]!.schema])) as SchemaFields<F>
    ).annotations({ identifier }),
    spec: identifier,
    minSize,
    size: (v) => structSize(fields, names, v),
    write: (w, v) => structWrite(fields, names, w, v),
    read: (r) => {
      const out: Record<string, unknown> = {}
      structRead(fields, names, r, out)
      return out as any
    },
    emit: structEmitter(undefined, fields, names, undefined)
  }
}

/**
 * A struct's fields in order, optionally after a `_tag`, and the refinements of its Schema above
 * the plain struct (`refine`), which no reader can imply.
 */
const structEmitter = (
  tag: string | undefined,
  fields: Fields,
  names: ReadonlyArray<string>,
  refine: Predicate | undefined
): Emitter => {
  const key = (name: string) => JSON.stringify(name)
  let fixedSize: number | undefined = 0
  for (const name of names) {
    const f = fields[name]!.emit.fixedSize
    fixedSize = fixedSize === undefined || f === undefined ? undefined : fixedSize + f
  }
  return {
    fixedSize,
    read: (g) => {
      const props = names.map((n) => `${key(n)}: ${fields[n]!.emit.read(g)}`)
      if (tag !== undefined) props.unshift(`_tag: ${JSON.stringify(tag)}`)
      // An object literal evaluates its values in order: the fields are read in wire order.
      return `${g.fn("r", `return { ${props.join(", ")} }`)}(r)`
    },
    size: (g, v) => {
      if (fixedSize !== undefined) return String(fixedSize)
      let constant = 0
      const parts: Array<string> = []
      for (const n of names) {
        const f = fields[n]!.emit
        if (f.fixedSize !== undefined) constant += f.fixedSize
        else parts.push(f.size(g, `v[${key(n)}]`))
      }
      return `${g.fn("v", `return ${[String(constant), ...parts].join(" + ")}`)}(${v})`
    },
    write: (g, v) =>
      `${g.fn("w, v", names.map((n) => fields[n]!.emit.write(g, `v[${key(n)}]`)).join("\n"))}(w, ${v});`,
    residual: (g, v) => {
      const parts: Array<string> = []
      for (const n of names) {
        const part = fields[n]!.emit.residual(g, `v[${key(n)}]`)
        if (part !== undefined) parts.push(part)
      }
      if (refine !== undefined) parts.push(`${g.ref(refine)}(v)`)
      if (parts.length === 0) return undefined
      return `${g.fn("v", `return ${parts.join(" && ")}`)}(${v})`
    }
  }
}

/** The refinements `ast` adds above `base`, as one predicate; the whole Schema if it is not that. */
const refinementsAbove = (ast: AST.AST, base: AST.AST): Predicate | undefined => {
  const filters: Array<AST.Refinement> = []
  let at = ast
  while (at !== base) {
    if (at._tag !== "Refinement") return compile(ast)
    filters.push(at)
    at = at.from
  }
  if (filters.length === 0) return undefined
  return (u) => {
    for (const r of filters) if (Option.isSome(r.filter(u, parseOptions, r))) return false
    return true
  }
}
const parseOptions: AST.ParseOptions = {}

/**
 * A message type: a tagged struct with a one-byte type code. As a top-level message the codec writes
 * the type byte first; nested in another message (a QC inside a Proposal) the type is implied and
 * only the fields are written.
 */
export interface MessageField<Tag extends string, F extends Fields, S extends Schema.Schema.Any>
  extends Field<S> {
  readonly tag: Tag
  readonly type: number
  readonly fields: F
  readonly names: ReadonlyArray<string>
}

export const message = <
  Tag extends string,
  F extends Fields,
  S extends Schema.Schema.Any = Schema.TaggedStruct<Tag, SchemaFields<F>>
>(
  tag: Tag,
  type: number,
  fields: F,
  refineSchema?: (schema: Schema.TaggedStruct<Tag, SchemaFields<F>>) => S
): MessageField<Tag, F, S> => {
  const names = Object.keys(fields)
  let minSize = 0
  for (const name of names) minSize += fields[name]!.minSize
  const base = Schema.TaggedStruct(
    tag,
    Object.fromEntries(names.map((n) => [n, fields[n]!.schema])) as SchemaFields<F>
  ).annotations({ identifier: tag })
  const schema = refineSchema ? refineSchema(base) : (base as unknown as S)
  return {
    tag,
    type,
    fields,
    names,
    schema,
    spec: tag,
    minSize,
    size: (v) => structSize(fields, names, v),
    write: (w, v) => structWrite(fields, names, w, v),
    read: (r) => {
      const out: Record<string, unknown> = { _tag: tag }
      structRead(fields, names, r, out)
      return out as Schema.Schema.Type<S>
    },
    emit: structEmitter(tag, fields, names, refinementsAbove(schema.ast, base.ast))
  }
}
