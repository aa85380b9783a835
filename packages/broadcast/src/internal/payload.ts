// What one message slot of a frame carries: a kind byte, then a message or an envelope (WIRE.md,
// "Channel payloads"). Point-to-point messages ride bare (the connection already authenticates the
// sender); broadcast ones ride in signed envelopes, so their origin survives relays.
import type { Envelope } from "@hotstuff2/wire"

/** A message encoded by `Codec`, from the connection's peer. */
export const DIRECT = 0x00
/** A trace context (16-byte trace id, 8-byte span id, 1 flags byte), then a message. */
export const DIRECT_TRACED = 0x01
/** An `Envelope`, signed by its origin. */
export const ENVELOPE = 0x02

/** An `Envelope` whose payload is a tree header, then a message (tree broadcast). */
export const TREE = 0x03
/** Sequence numbers of the receiver's envelopes that the sender has (tree receipts). */
export const RECEIPT = 0x04
/** An `Envelope` whose payload is its target's key, then a message (routed `send`). */
export const ROUTED = 0x05

/** A target's 32-byte key, then a tree slot to pass on to it unchanged (a repair through a relay). */
export const FORWARD = 0x06

/**
 * Reliable delivery: the sender's incarnation, the message's sequence number in the sender's stream
 * to this receiver, the stream's floor (8 bytes each, big-endian), then a whole `DIRECT`,
 * `DIRECT_TRACED` or `ENVELOPE` slot whose origin is the sender.
 */
export const RELIABLE = 0x07

/** The fixed header of a reliable slot: kind, incarnation, sequence, floor. */
export const RELIABLE_HEADER = 25

const TRACE_BYTES = 25

const DIRECT_PREFIX = Uint8Array.of(DIRECT)

/**
 * What goes in front of a message sent point to point: the kind byte, and the trace context when
 * there is one (the codec writes the message right behind it: `Codec.encodeAfter`).
 */
export const directPrefix = (trace: Envelope.TraceContext | undefined): Uint8Array => {
  if (trace === undefined) return DIRECT_PREFIX
  const out = new Uint8Array(1 + TRACE_BYTES)
  out[0] = DIRECT_TRACED
  out.set(trace.traceId, 1)
  out.set(trace.spanId, 17)
  out[25] = trace.flags & 0xff
  return out
}

/** A slot of `kind` whose body is `body` (an envelope's bytes). */
export const slot = (kind: number, body: Uint8Array): Uint8Array => {
  const out = Buffer.allocUnsafe(1 + body.length)
  out[0] = kind
  out.set(body, 1)
  return out
}

export const envelope = (sealed: Uint8Array): Uint8Array => slot(ENVELOPE, sealed)

export type Parsed =
  | { readonly kind: typeof DIRECT; readonly body: Uint8Array; readonly trace: undefined }
  | { readonly kind: typeof DIRECT_TRACED; readonly body: Uint8Array; readonly trace: Envelope.TraceContext }
  | {
      readonly kind:
        | typeof ENVELOPE
        | typeof TREE
        | typeof RECEIPT
        | typeof ROUTED
        | typeof FORWARD
        | typeof RELIABLE
      readonly body: Uint8Array
      readonly trace: undefined
    }

/** Splits a slot into its kind and body (a view, not a copy); a string says what is wrong. */
export const parse = (bytes: Uint8Array): Parsed | string => {
  if (bytes.length === 0) return "empty message slot"
  const kind = bytes[0]
  switch (kind) {
    case DIRECT:
      return { kind, body: bytes.subarray(1), trace: undefined }
    case ENVELOPE:
    case TREE:
    case RECEIPT:
    case ROUTED:
    case FORWARD:
    case RELIABLE:
      return { kind, body: bytes.subarray(1), trace: undefined }
    case DIRECT_TRACED:
      if (bytes.length < 1 + TRACE_BYTES) return "trace context cut short"
      return {
        kind,
        body: bytes.subarray(1 + TRACE_BYTES),
        trace: { traceId: bytes.subarray(1, 17), spanId: bytes.subarray(17, 25), flags: bytes[25]! }
      }
    default:
      return `unknown payload kind 0x${kind!.toString(16).padStart(2, "0")}`
  }
}

/** The type bytes of `RpcRequest` and `RpcResponse` (WIRE.md 4). */
const RPC_REQUEST = 0x12
const RPC_RESPONSE = 0x13

/**
 * Whether a slot is a bare (`DIRECT`) or traced (`DIRECT_TRACED`) message whose type byte is
 * `RpcRequest` or `RpcResponse`: two or three byte reads, no decoding. Whether it decodes is for its
 * consumer to find out.
 */
export const isRpcSlot = (slot: Uint8Array): boolean => {
  const kind = slot[0]
  const type = kind === DIRECT ? slot[1] : kind === DIRECT_TRACED ? slot[1 + TRACE_BYTES] : undefined
  return type === RPC_REQUEST || type === RPC_RESPONSE
}

/** A forward slot: `target`'s key, then `inner` (a tree slot) for the relay to pass on unchanged. */
export const forward = (target: Uint8Array, inner: Uint8Array): Uint8Array => {
  if (target.length !== 32) throw new RangeError(`forward: a target is 32 bytes, not ${target.length}`)
  const out = Buffer.allocUnsafe(1 + 32 + inner.length)
  out[0] = FORWARD
  out.set(target, 1)
  out.set(inner, 33)
  return out
}

/**
 * Splits `body` into a 32-byte target key (hex) and what follows it (a view), for forward slots and
 * routed payloads; a string, prefixed with `what`, says what is wrong.
 */
export const splitTarget = (
  body: Uint8Array,
  what: string
): { readonly target: string; readonly rest: Uint8Array } | string => {
  if (body.length < 32) return `${what}: target cut short (${body.length} of 32 bytes)`
  if (body.length === 32) return `${what}: nothing after the target`
  return { target: Buffer.from(body.buffer, body.byteOffset, 32).toString("hex"), rest: body.subarray(32) }
}

/** A forward slot's target (hex) and inner slot (a view); a string says what is wrong. */
export const parseForward = (
  body: Uint8Array
): { readonly target: string; readonly inner: Uint8Array } | string => {
  const split = splitTarget(body, "forward")
  if (typeof split === "string") return split
  if (split.rest[0] !== TREE) return "forward: what it carries is not a tree slot"
  return { target: split.target, inner: split.rest }
}

/** A reliable slot's header and the slot it carries (a view); a string says what is wrong. */
export interface ReliableHeader {
  readonly incarnation: bigint
  readonly sequence: bigint
  readonly floor: bigint
  readonly inner: Uint8Array
}

/** Reads a reliable slot's body (after its kind byte). */
export const parseReliable = (body: Uint8Array): ReliableHeader | string => {
  if (body.length < RELIABLE_HEADER - 1) {
    return `reliable header cut short (${body.length} of ${RELIABLE_HEADER - 1} bytes)`
  }
  const view = new DataView(body.buffer, body.byteOffset, body.length)
  const incarnation = view.getBigUint64(0)
  const sequence = view.getBigUint64(8)
  const floor = view.getBigUint64(16)
  const inner = body.subarray(RELIABLE_HEADER - 1)
  if (inner.length === 0) return "reliable slot carries nothing"
  const kind = inner[0]
  if (kind !== DIRECT && kind !== DIRECT_TRACED && kind !== ENVELOPE) {
    return `reliable slot carries kind 0x${kind!.toString(16).padStart(2, "0")}; only 0x00, 0x01 and 0x02 may be`
  }
  if (sequence === 0n) return "reliable sequence numbers start at 1"
  if (floor > sequence) return `reliable floor ${floor} is above the sequence ${sequence}`
  return { incarnation, sequence, floor, inner }
}

/** A reliable slot: the header, then `inner` (copied behind it). */
export const reliable = (
  incarnation: bigint,
  sequence: bigint,
  floor: bigint,
  inner: Uint8Array
): Uint8Array => {
  const out = Buffer.allocUnsafe(RELIABLE_HEADER + inner.length)
  out[0] = RELIABLE
  out.writeBigUInt64BE(incarnation, 1)
  out.writeBigUInt64BE(sequence, 9)
  out.writeBigUInt64BE(floor, 17)
  out.set(inner, RELIABLE_HEADER)
  return out
}
