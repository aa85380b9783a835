// The bodies of the tree, receipt and routed message slots (WIRE.md 7.6). The tree header and the
// routed target ride inside the envelope's payload, so the origin's signature covers them and relays
// cannot change where a message goes. Decoders return a string for bad input and never throw.
import type { Identity } from "@hotstuff2/wire"
import { RECEIPT, type ROUTED, splitTarget, type TREE } from "../payload.js"

// The kind bytes live with the other slot kinds.
export { RECEIPT, ROUTED, TREE } from "../payload.js"

type PeerId = Identity.PeerId

/** The only tree header version. */
export const TREE_HEADER_VERSION = 1
export const MIN_FANOUT = 2
export const MAX_FANOUT = 1024
/** The most demoted members one header may name. */
export const MAX_DEMOTED = 4096
/** The most sequence numbers one receipt may carry. */
export const MAX_RECEIPT_SEQUENCES = 256

const U64_MAX = 2n ** 64n - 1n

/** What lays out a tree, besides the members and the origin (the envelope's signer). */
export interface TreeHeader {
  readonly epoch: bigint
  readonly round: bigint
  readonly fanout: number
  /** Indices into the epoch's sorted members, strictly increasing: placed last, as leaves. */
  readonly demoted: ReadonlyArray<number>
}

// --- Canonical unsigned LEB128 (WIRE.md 2.1, 2.2) ---------------------------------------------------

const u32Size = (value: number): number =>
  value < 0x80 ? 1 : value < 0x4000 ? 2 : value < 0x200000 ? 3 : value < 0x10000000 ? 4 : 5

const u64Size = (value: bigint): number => {
  let size = 1
  while (value >= 0x80n) {
    value >>= 7n
    size++
  }
  return size
}

const writeU32 = (out: Uint8Array, at: number, value: number): number => {
  while (value >= 0x80) {
    out[at++] = (value & 0x7f) | 0x80
    value = Math.floor(value / 128)
  }
  out[at++] = value
  return at
}

const writeU64 = (out: Uint8Array, at: number, value: bigint): number => {
  while (value >= 0x80n) {
    out[at++] = Number(value & 0x7fn) | 0x80
    value >>= 7n
  }
  out[at++] = Number(value)
  return at
}

const isU32 = (value: number): boolean => Number.isInteger(value) && value >= 0 && value <= 0xffffffff
const isU64 = (value: bigint): boolean => typeof value === "bigint" && value >= 0n && value <= U64_MAX

/** Reads canonical varints; a failed read records why in `error` and returns 0. */
class Cursor {
  pos = 0
  error: string | undefined = undefined

  constructor(
    private readonly bytes: Uint8Array,
    private readonly what: string
  ) {}

  get left(): number {
    return this.bytes.length - this.pos
  }

  fail(reason: string): 0 {
    this.error ??= `${this.what}: ${reason}`
    return 0
  }

  u32(field: string): number {
    const start = this.pos
    let value = 0
    for (let i = 0; i < 5; i++) {
      if (this.pos >= this.bytes.length) return this.fail(`${field} cut short at offset ${this.pos}`)
      const byte = this.bytes[this.pos++]!
      if (i === 4 && byte > 0x0f) return this.fail(`${field} exceeds 32 bits at offset ${start}`)
      value += (byte & 0x7f) * 2 ** (7 * i)
      if ((byte & 0x80) === 0) {
        if (byte === 0 && i > 0) return this.fail(`${field} is a non-canonical varint at offset ${start}`)
        return value
      }
    }
    return this.fail(`${field} exceeds 32 bits at offset ${start}`)
  }

  u64(field: string): bigint {
    const start = this.pos
    let value = 0n
    for (let i = 0; i < 10; i++) {
      if (this.pos >= this.bytes.length) return BigInt(this.fail(`${field} cut short at offset ${this.pos}`))
      const byte = this.bytes[this.pos++]!
      if (i === 9 && byte !== 0x01) {
        return BigInt(
          this.fail(
            `${field} ${byte === 0 ? "is a non-canonical varint" : "exceeds 64 bits"} at offset ${start}`
          )
        )
      }
      value |= BigInt(byte & 0x7f) << BigInt(7 * i)
      if ((byte & 0x80) === 0) {
        if (byte === 0 && i > 0)
          return BigInt(this.fail(`${field} is a non-canonical varint at offset ${start}`))
        return value
      }
    }
    return BigInt(this.fail(`${field} exceeds 64 bits at offset ${start}`))
  }
}

// --- Tree header ----------------------------------------------------------------------------------

/** Why a header cannot be sent (or accepted), or undefined if it can. */
const treeHeaderProblem = (header: TreeHeader, memberCount: number | undefined): string | undefined => {
  if (!isU64(header.epoch)) return `tree header: epoch ${header.epoch} is not a u64`
  if (!isU64(header.round)) return `tree header: round ${header.round} is not a u64`
  if (!Number.isInteger(header.fanout) || header.fanout < MIN_FANOUT || header.fanout > MAX_FANOUT) {
    return `tree header: fanout ${header.fanout} out of range ${MIN_FANOUT}..${MAX_FANOUT}`
  }
  const { demoted } = header
  if (demoted.length > MAX_DEMOTED)
    return `tree header: ${demoted.length} demoted members, more than ${MAX_DEMOTED}`
  for (let i = 0; i < demoted.length; i++) {
    const index = demoted[i]!
    if (!isU32(index)) return `tree header: demoted index ${index} is not a u32`
    if (i > 0 && index <= demoted[i - 1]!) {
      return `tree header: demoted indices not strictly increasing (${demoted[i - 1]} then ${index})`
    }
    if (memberCount !== undefined && index >= memberCount) {
      return `tree header: demoted index ${index} past the ${memberCount} members`
    }
  }
  return undefined
}

/**
 * `version`, `epoch`, `round`, `fanout`, the demoted count and indices, then `message` (the envelope's
 * payload, in one allocation). Throws a RangeError for a header no peer would accept.
 */
export const encodeTreeHeader = (header: TreeHeader, message: Uint8Array = new Uint8Array(0)): Uint8Array => {
  const problem = treeHeaderProblem(header, undefined)
  if (problem !== undefined) throw new RangeError(problem)
  let size = 1 + u64Size(header.epoch) + u64Size(header.round) + u32Size(header.fanout)
  size += u32Size(header.demoted.length)
  for (const index of header.demoted) size += u32Size(index)
  const out = new Uint8Array(size + message.length)
  let at = writeU32(out, 0, TREE_HEADER_VERSION)
  at = writeU64(out, at, header.epoch)
  at = writeU64(out, at, header.round)
  at = writeU32(out, at, header.fanout)
  at = writeU32(out, at, header.demoted.length)
  for (const index of header.demoted) at = writeU32(out, at, index)
  out.set(message, at)
  return out
}

/**
 * Splits a tree slot's (verified) envelope payload into its header and message (a view). With
 * `memberCount`, demoted indices must name members. A string says what is wrong; never throws.
 */
export const decodeTreeHeader = (
  payload: Uint8Array,
  memberCount?: number
): { readonly header: TreeHeader; readonly message: Uint8Array } | string => {
  const cursor = new Cursor(payload, "tree header")
  const version = cursor.u32("version")
  if (cursor.error !== undefined) return cursor.error
  if (version !== TREE_HEADER_VERSION)
    return `tree header: version ${version}, only ${TREE_HEADER_VERSION} is known`
  const epoch = cursor.u64("epoch")
  const round = cursor.u64("round")
  const fanout = cursor.u32("fanout")
  if (cursor.error !== undefined) return cursor.error
  if (fanout < MIN_FANOUT || fanout > MAX_FANOUT) {
    return `tree header: fanout ${fanout} out of range ${MIN_FANOUT}..${MAX_FANOUT}`
  }
  const count = cursor.u32("demoted count")
  if (cursor.error !== undefined) return cursor.error
  if (count > MAX_DEMOTED) return `tree header: ${count} demoted members, more than ${MAX_DEMOTED}`
  if (count > cursor.left) return `tree header: ${count} demoted indices cannot fit in ${cursor.left} bytes`
  const demoted = new Array<number>(count)
  for (let i = 0; i < count; i++) {
    demoted[i] = cursor.u32(`demoted index ${i}`)
    if (cursor.error !== undefined) return cursor.error
  }
  const header: TreeHeader = { epoch, round, fanout, demoted }
  const problem = treeHeaderProblem(header, memberCount)
  if (problem !== undefined) return problem
  if (cursor.left === 0) return "tree header: no message after the header"
  return { header, message: payload.subarray(cursor.pos) }
}

// --- Routed ---------------------------------------------------------------------------------------

const PEER_ID = /^[0-9a-f]{64}$/

/** A routed envelope's payload: the target's 32 bytes, then the message. Throws for a bad PeerId. */
export const encodeRouted = (target: PeerId, message: Uint8Array): Uint8Array => {
  if (!PEER_ID.test(target)) throw new RangeError(`routed: target ${target} is not a PeerId`)
  const out = new Uint8Array(32 + message.length)
  out.set(Buffer.from(target, "hex"), 0)
  out.set(message, 32)
  return out
}

/** Splits a routed slot's (verified) envelope payload; the message is a view. Never throws. */
export const decodeRouted = (
  payload: Uint8Array
): { readonly target: PeerId; readonly message: Uint8Array } | string => {
  const split = splitTarget(payload, "routed")
  if (typeof split === "string") return split
  return { target: split.target as PeerId, message: split.rest }
}

// --- Receipt --------------------------------------------------------------------------------------

/**
 * The whole receipt slot (kind byte, count, sequences): "I have these envelopes of yours", sent to
 * their origin. Throws a RangeError for 0 or more than 256 sequences, or one that is not a u64.
 */
export const encodeReceipt = (sequences: ReadonlyArray<bigint>): Uint8Array => {
  const count = sequences.length
  if (count < 1 || count > MAX_RECEIPT_SEQUENCES) {
    throw new RangeError(`receipt: ${count} sequences out of range 1..${MAX_RECEIPT_SEQUENCES}`)
  }
  let size = 1 + u32Size(count)
  for (const sequence of sequences) {
    if (!isU64(sequence)) throw new RangeError(`receipt: sequence ${sequence} is not a u64`)
    size += u64Size(sequence)
  }
  const out = new Uint8Array(size)
  out[0] = RECEIPT
  let at = writeU32(out, 1, count)
  for (const sequence of sequences) at = writeU64(out, at, sequence)
  return out
}

/** A receipt slot's body (the bytes after the kind byte). A string says what is wrong; never throws. */
export const decodeReceipt = (body: Uint8Array): Array<bigint> | string => {
  const cursor = new Cursor(body, "receipt")
  const count = cursor.u32("count")
  if (cursor.error !== undefined) return cursor.error
  if (count < 1 || count > MAX_RECEIPT_SEQUENCES) {
    return `receipt: ${count} sequences out of range 1..${MAX_RECEIPT_SEQUENCES}`
  }
  if (count > cursor.left) return `receipt: ${count} sequences cannot fit in ${cursor.left} bytes`
  const sequences = new Array<bigint>(count)
  for (let i = 0; i < count; i++) {
    sequences[i] = cursor.u64(`sequence ${i}`)
    if (cursor.error !== undefined) return cursor.error
  }
  if (cursor.left !== 0) return `receipt: ${cursor.left} trailing bytes after the sequences`
  return sequences
}

/** A slot: the kind byte, then the body (a sealed envelope for TREE and ROUTED). */
export const slot = (kind: typeof TREE | typeof ROUTED, sealed: Uint8Array): Uint8Array => {
  const out = new Uint8Array(1 + sealed.length)
  out[0] = kind
  out.set(sealed, 1)
  return out
}
