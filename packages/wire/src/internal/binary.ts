// Low-level canonical binary primitives: unsigned LEB128 varints, fixed and length-prefixed bytes.
// Decoding throws `DecodeFailure`, which the public decoders catch and turn into a typed error;
// it never escapes the package.
import { Malformed } from "../WireError.js"

/** A decoding failure inside the package, carrying the field path built up while unwinding. */
export class DecodeFailure {
  readonly path: Array<string> = []
  constructor(
    readonly offset: number,
    readonly reason: string
  ) {}
}

/** Turns an internal decoding failure into the public error. */
export const fromFailure = (what: string, failure: DecodeFailure): Malformed =>
  new Malformed({ what, path: failure.path.join("."), offset: failure.offset, reason: failure.reason })

export const fail = (offset: number, reason: string): never => {
  throw new DecodeFailure(offset, reason)
}

export class Reader {
  pos: number
  constructor(
    readonly buf: Uint8Array,
    start: number,
    readonly end: number
  ) {
    this.pos = start
  }

  get remaining(): number {
    return this.end - this.pos
  }

  u8(): number {
    if (this.pos >= this.end) fail(this.pos, "unexpected end of input")
    return this.buf[this.pos++]!
  }

  /** A canonical varint of at most 32 bits. */
  u32(): number {
    const start = this.pos
    let result = 0
    // 2^(7i) as a running product: `2 ** shift` is a call to pow per byte.
    let scale = 1
    for (let i = 0; i < 5; i++) {
      if (this.pos >= this.end) fail(start, "unexpected end of input in varint")
      const byte = this.buf[this.pos++]!
      if (i === 4 && byte > 0x0f) fail(start, "varint exceeds 32 bits")
      result += (byte & 0x7f) * scale
      if ((byte & 0x80) === 0) {
        if (byte === 0 && i > 0) fail(start, "non-canonical varint (overlong encoding)")
        return result
      }
      scale *= 128
    }
    return fail(start, "varint exceeds 32 bits")
  }

  /** A canonical varint of at most 64 bits. */
  u64(): bigint {
    const start = this.pos
    // Fast path: up to 7 bytes (49 bits) accumulate exactly in a double.
    let low = 0
    let scale = 1
    for (let i = 0; i < 7; i++) {
      if (this.pos >= this.end) fail(start, "unexpected end of input in varint")
      const byte = this.buf[this.pos++]!
      low += (byte & 0x7f) * scale
      if ((byte & 0x80) === 0) {
        if (byte === 0 && i > 0) fail(start, "non-canonical varint (overlong encoding)")
        return BigInt(low)
      }
      scale *= 128
    }
    let result = BigInt(low)
    let shift = 49
    for (let i = 7; i < 10; i++) {
      if (this.pos >= this.end) fail(start, "unexpected end of input in varint")
      const byte = this.buf[this.pos++]!
      if (i === 9 && byte > 0x01) fail(start, "varint exceeds 64 bits")
      result |= BigInt(byte & 0x7f) << BigInt(shift)
      if ((byte & 0x80) === 0) {
        if (byte === 0) fail(start, "non-canonical varint (overlong encoding)")
        return result
      }
      shift += 7
    }
    return fail(start, "varint exceeds 64 bits")
  }

  /** A view of the next `length` bytes (no copy). */
  bytes(length: number): Uint8Array {
    if (length > this.end - this.pos) {
      fail(this.pos, `length ${length} exceeds the ${this.end - this.pos} bytes left`)
    }
    const view = new Uint8Array(this.buf.buffer, this.buf.byteOffset + this.pos, length)
    this.pos += length
    return view
  }

  /** Checks that `length` bytes are left and moves past them; their start. */
  skip(length: number): number {
    if (length > this.end - this.pos) {
      fail(this.pos, `length ${length} exceeds the ${this.end - this.pos} bytes left`)
    }
    const at = this.pos
    this.pos += length
    return at
  }

  /** A varint length followed by that many bytes, the length checked against `max` first. */
  lengthPrefixed(max: number): Uint8Array {
    const at = this.pos
    const length = this.u32()
    if (length > max) fail(at, `length ${length} exceeds the limit of ${max}`)
    return this.bytes(length)
  }
}

export class Writer {
  pos = 0
  constructor(readonly buf: Buffer) {}

  u8(value: number): void {
    this.buf[this.pos++] = value
  }

  u32(value: number): void {
    while (value >= 0x80) {
      this.buf[this.pos++] = (value & 0x7f) | 0x80
      value = Math.floor(value / 128)
    }
    this.buf[this.pos++] = value
  }

  u64(value: bigint): void {
    if (value <= 0xffffffffn) {
      this.u32(Number(value))
      return
    }
    while (value >= 0x80n) {
      this.buf[this.pos++] = Number(value & 0x7fn) | 0x80
      value >>= 7n
    }
    this.buf[this.pos++] = Number(value)
  }

  bytes(value: Uint8Array): void {
    this.buf.set(value, this.pos)
    this.pos += value.length
  }

  lengthPrefixed(value: Uint8Array): void {
    this.u32(value.length)
    this.bytes(value)
  }
}

// Encoded messages up to 4 KiB are carved from 64 KiB slabs, as `Buffer.allocUnsafe` carves from
// Node's 8 KiB pool but with one ArrayBuffer per ~45 1 KiB Proposals instead of per 5 (each costs
// an allocation and a GC sweep). A retained message keeps its slab alive, as with Node's pool.
const SLAB_BYTES = 64 * 1024
const MAX_SLAB_ALLOCATION = 4 * 1024
// Not zeroed (`allocUnsafeSlow`: an ArrayBuffer of its own, outside Node's pool): every byte handed
// out is written by its caller before it is read.
const newSlab = (): ArrayBuffer => Buffer.allocUnsafeSlow(SLAB_BYTES).buffer as ArrayBuffer
let slab = newSlab()
let slabOffset = 0

/** A Buffer of `size` bytes, not zeroed: the caller writes every byte. */
export const allocate = (size: number): Buffer => {
  if (size > MAX_SLAB_ALLOCATION) return Buffer.allocUnsafe(size)
  if (slabOffset + size > SLAB_BYTES) {
    slab = newSlab()
    slabOffset = 0
  }
  const buf = Buffer.from(slab, slabOffset, size)
  slabOffset = (slabOffset + size + 7) & ~7
  return buf
}

export const u32Size = (value: number): number => {
  let size = 1
  while (value >= 0x80) {
    value = Math.floor(value / 128)
    size++
  }
  return size
}

export const u64Size = (value: bigint): number => {
  if (value <= 0xffffffffn) return u32Size(Number(value))
  let size = 1
  while (value >= 0x80n) {
    value >>= 7n
    size++
  }
  return size
}

/** Reads `length` bytes starting at `offset` across a list of chunks, into a fresh array. */
export const gather = (chunks: ReadonlyArray<Uint8Array>, length: number): Uint8Array => {
  // Not zeroed, and not from Node's shared pool (a retained message would pin the whole pool):
  // filled below, every byte, since the chunks hold at least `length` bytes.
  const out = Buffer.allocUnsafeSlow(length)
  let filled = 0
  for (const chunk of chunks) {
    if (filled >= length) break
    const take = Math.min(chunk.length, length - filled)
    out.set(take === chunk.length ? chunk : chunk.subarray(0, take), filled)
    filled += take
  }
  if (filled < length) out.fill(0, filled)
  return out
}
