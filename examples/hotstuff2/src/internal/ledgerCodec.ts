// The bytes of the ledger's log and of the safety file: CRC-32, record framing, and the bodies of a
// CommittedBlock and a SafetyState. Certificates go through the wire codec (`Codec.encode`, type byte
// included), so a ledger record carries exactly the bytes a peer would sign and verify; the Block
// struct is laid out here because the wire package keeps its field writers internal.
import * as zlib from "node:zlib"
import { Codec, Message } from "@hotstuff2/wire"
import * as Either from "effect/Either"
import * as Schema from "effect/Schema"
import type { CommittedBlock, QuorumCertificate, SafetyState } from "../core/types.js"

// ---------------------------------------------------------------------------------------------
// CRC-32 (IEEE, the zlib/PNG polynomial): node:zlib has it natively from Node 20.15 and 22.2 (checked
// on 20.20 and 26.12); older Nodes get the table version, which gives the same values.

const table = (): Uint32Array => {
  const t = new Uint32Array(256)
  for (let n = 0; n < 256; n++) {
    let c = n
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1
    t[n] = c >>> 0
  }
  return t
}

/** CRC-32 by table, for a Node without `zlib.crc32` (and the reference the tests hold it to). */
export const crc32Table = (() => {
  let t: Uint32Array | undefined
  return (data: Uint8Array): number => {
    t ??= table()
    let c = 0xffffffff
    for (let i = 0; i < data.length; i++) c = t[(c ^ data[i]!) & 0xff]! ^ (c >>> 8)
    return (c ^ 0xffffffff) >>> 0
  }
})()

/** CRC-32 of `data`, unsigned. */
export const crc32: (data: Uint8Array) => number =
  typeof zlib.crc32 === "function" ? (data) => zlib.crc32(data) >>> 0 : crc32Table

// ---------------------------------------------------------------------------------------------
// The ledger log: an 8-byte file header, then records of
//   u32 bodyLength | u32 crc32(body) | u32 crc32(the 8 bytes before) | body
// all big-endian. The header's own checksum makes the length trustworthy before the body is read:
// a length that reaches past the end of the file is a torn append, never a corrupted length
// silently hiding the records behind it.

/** "hs2ledg" and format version 1. */
export const LOG_MAGIC = Buffer.from([0x68, 0x73, 0x32, 0x6c, 0x65, 0x64, 0x67, 0x01])
export const RECORD_HEADER_BYTES = 12

const BODY_VERSION = 1
const BLOCK_FIXED_BYTES = 1 + 32 + 32 + 8 + 4
/** The smallest body: a block with no payload and two certificates with no signers. */
export const MIN_BODY_BYTES = BLOCK_FIXED_BYTES + 4 + 4 + 2 * 34
/** A block of the largest payload the wire accepts and two certificates of the largest validator set. */
export const MAX_BODY_BYTES =
  BLOCK_FIXED_BYTES +
  Message.MAX_PAYLOAD_BYTES +
  2 * (4 + 1 + 10 + 32 + 3 + 512 + 2 + 64 * Message.MAX_VALIDATORS)

/** A record header for `body`. */
export const recordHeader = (body: Uint8Array): Buffer => {
  const header = Buffer.allocUnsafe(RECORD_HEADER_BYTES)
  header.writeUInt32BE(body.length, 0)
  header.writeUInt32BE(crc32(body), 4)
  header.writeUInt32BE(crc32(header.subarray(0, 8)), 8)
  return header
}

/** The body length a header at `offset` of `buf` declares, or undefined if its checksum or length is off. */
export const headerLength = (buf: Uint8Array, offset: number): number | undefined => {
  const view = Buffer.from(buf.buffer, buf.byteOffset + offset, RECORD_HEADER_BYTES)
  const length = view.readUInt32BE(0)
  if (length < MIN_BODY_BYTES || length > MAX_BODY_BYTES) return undefined
  return crc32(view.subarray(0, 8)) === view.readUInt32BE(8) ? length : undefined
}

/** Whether `body` matches the checksum in the header at `headerOffset` of `buf`. */
export const bodyMatches = (buf: Uint8Array, headerOffset: number, body: Uint8Array): boolean =>
  Buffer.from(buf.buffer, buf.byteOffset + headerOffset, RECORD_HEADER_BYTES).readUInt32BE(4) === crc32(body)

// ---------------------------------------------------------------------------------------------
// A record's body:
//   u8 version (1) | hash[32] | parent[32] | u64 height | u32 n, payload[n]
//   | u32 n, Codec.encode(justify)[n] | u32 n, Codec.encode(certificate)[n]

const isBlock = Schema.is(Message.Block)

/** The fields the ledger checks its chain with, read without decoding the certificates. */
export interface BlockLink {
  readonly hash: Uint8Array
  readonly parent: Uint8Array
  readonly height: bigint
}

const encodeCertificate = (what: string, qc: QuorumCertificate): Either.Either<Uint8Array, string> =>
  Either.mapLeft(Codec.encode(qc), (e) => `${what}: ${e.message}`)

/** A CommittedBlock as a record body, or why it cannot be one (a malformed block or certificate). */
export const encodeCommitted = (committed: CommittedBlock): Either.Either<Buffer, string> => {
  const { block } = committed
  if (!isBlock(block)) return Either.left("block is not a valid Block (32-byte hashes, a u64 height, bytes)")
  if (block.payload.length > Message.MAX_PAYLOAD_BYTES) {
    return Either.left(`payload of ${block.payload.length} bytes, over ${Message.MAX_PAYLOAD_BYTES}`)
  }
  const justify = encodeCertificate("justify", committed.justify)
  if (Either.isLeft(justify)) return Either.left(justify.left)
  const certificate = encodeCertificate("certificate", committed.certificate)
  if (Either.isLeft(certificate)) return Either.left(certificate.left)
  const j = justify.right
  const c = certificate.right
  const body = Buffer.allocUnsafe(BLOCK_FIXED_BYTES + block.payload.length + 4 + j.length + 4 + c.length)
  body.writeUInt8(BODY_VERSION, 0)
  body.set(block.hash, 1)
  body.set(block.parent, 33)
  body.writeBigUInt64BE(block.height, 65)
  let at = body.writeUInt32BE(block.payload.length, 73)
  body.set(block.payload, at)
  at = body.writeUInt32BE(j.length, at + block.payload.length)
  body.set(j, at)
  at = body.writeUInt32BE(c.length, at + j.length)
  body.set(c, at)
  return Either.right(body)
}

/** Hash, parent and height of a body, or why they cannot be read. */
export const decodeLink = (body: Uint8Array): Either.Either<BlockLink, string> => {
  if (body.length < BLOCK_FIXED_BYTES) return Either.left(`body of ${body.length} bytes is too short`)
  if (body[0] !== BODY_VERSION) return Either.left(`unknown record version ${body[0]}`)
  const view = Buffer.from(body.buffer, body.byteOffset, body.length)
  return Either.right({
    hash: body.subarray(1, 33),
    parent: body.subarray(33, 65),
    height: view.readBigUInt64BE(65)
  })
}

/** A CommittedBlock from a body (byte fields are views into `body`), or why it is not one. */
export const decodeCommitted = (body: Uint8Array): Either.Either<CommittedBlock, string> => {
  const link = decodeLink(body)
  if (Either.isLeft(link)) return Either.left(link.left)
  const view = Buffer.from(body.buffer, body.byteOffset, body.length)
  let at = 73
  const take = (what: string): Uint8Array | string => {
    if (at + 4 > body.length) return `${what}: length past the end of the body`
    const n = view.readUInt32BE(at)
    if (at + 4 + n > body.length) return `${what}: ${n} bytes past the end of the body`
    const out = body.subarray(at + 4, at + 4 + n)
    at += 4 + n
    return out
  }
  const payload = take("payload")
  if (typeof payload === "string") return Either.left(payload)
  const certificates: Array<QuorumCertificate> = []
  for (const what of ["justify", "certificate"]) {
    const bytes = take(what)
    if (typeof bytes === "string") return Either.left(bytes)
    const decoded = Codec.decode(bytes)
    if (Either.isLeft(decoded)) return Either.left(`${what}: ${decoded.left.message}`)
    if (decoded.right._tag !== "QuorumCertificate") return Either.left(`${what}: a ${decoded.right._tag}`)
    certificates.push(decoded.right)
  }
  if (at !== body.length) return Either.left(`${body.length - at} trailing bytes`)
  const { hash, parent, height } = link.right
  return Either.right({
    block: { hash, parent, height, payload },
    justify: certificates[0]!,
    certificate: certificates[1]!
  })
}

// ---------------------------------------------------------------------------------------------
// The safety file, whole:
//   "hs2safe" 0x01 | u32 crc32(body) | body = u64 lastVoted | u64 lastTimedOut | Codec.encode(locked)

export const SAFETY_MAGIC = Buffer.from([0x68, 0x73, 0x32, 0x73, 0x61, 0x66, 0x65, 0x01])
const SAFETY_PREFIX = SAFETY_MAGIC.length + 4
const U64_MAX = 2n ** 64n - 1n

/** A SafetyState as the safety file's bytes, or why it cannot be one. */
export const encodeSafety = (state: SafetyState): Either.Either<Buffer, string> => {
  for (const [name, v] of [
    ["lastVoted", state.lastVoted],
    ["lastTimedOut", state.lastTimedOut]
  ] as const) {
    if (typeof v !== "bigint" || v < 0n || v > U64_MAX) return Either.left(`${name} ${v} is not a u64`)
  }
  const locked = encodeCertificate("locked", state.locked)
  if (Either.isLeft(locked)) return Either.left(locked.left)
  const file = Buffer.allocUnsafe(SAFETY_PREFIX + 16 + locked.right.length)
  SAFETY_MAGIC.copy(file, 0)
  file.writeBigUInt64BE(state.lastVoted, SAFETY_PREFIX)
  file.writeBigUInt64BE(state.lastTimedOut, SAFETY_PREFIX + 8)
  file.set(locked.right, SAFETY_PREFIX + 16)
  file.writeUInt32BE(crc32(file.subarray(SAFETY_PREFIX)), SAFETY_MAGIC.length)
  return Either.right(file)
}

/** A SafetyState from the safety file's bytes, or why they are not one. */
export const decodeSafety = (file: Uint8Array): Either.Either<SafetyState, string> => {
  if (file.length < SAFETY_PREFIX + 16)
    return Either.left(`${file.length} bytes, shorter than any safety file`)
  const view = Buffer.from(file.buffer, file.byteOffset, file.length)
  if (!view.subarray(0, SAFETY_MAGIC.length).equals(SAFETY_MAGIC)) {
    return Either.left("not a safety file (or an unknown version): bad magic")
  }
  const body = view.subarray(SAFETY_PREFIX)
  if (crc32(body) !== view.readUInt32BE(SAFETY_MAGIC.length)) return Either.left("checksum mismatch")
  const locked = Codec.decode(body.subarray(16))
  if (Either.isLeft(locked)) return Either.left(`locked: ${locked.left.message}`)
  if (locked.right._tag !== "QuorumCertificate") return Either.left(`locked: a ${locked.right._tag}`)
  return Either.right({
    lastVoted: view.readBigUInt64BE(SAFETY_PREFIX),
    lastTimedOut: view.readBigUInt64BE(SAFETY_PREFIX + 8),
    locked: locked.right
  })
}
