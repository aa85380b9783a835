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

const TRACE_BYTES = 25

// Slots up to 4 KiB are carved from 64 KiB slabs: a slot lives only until the connection copies it
// into its frame, and Node's 8 KiB pool holds five 1 KiB slots (an allocation and a GC sweep per five).
const SLAB_BYTES = 64 * 1024
const MAX_CARVED = 4096
let slab = new ArrayBuffer(SLAB_BYTES)
let slabOffset = 0

const allocate = (size: number): Uint8Array => {
  if (size > MAX_CARVED) return new Uint8Array(size)
  if (slabOffset + size > SLAB_BYTES) {
    slab = new ArrayBuffer(SLAB_BYTES)
    slabOffset = 0
  }
  const out = new Uint8Array(slab, slabOffset, size)
  slabOffset = (slabOffset + size + 7) & ~7
  return out
}

export const direct = (encoded: Uint8Array, trace: Envelope.TraceContext | undefined): Uint8Array => {
  if (trace === undefined) {
    const out = allocate(1 + encoded.length)
    out[0] = DIRECT
    out.set(encoded, 1)
    return out
  }
  const out = Buffer.allocUnsafe(1 + TRACE_BYTES + encoded.length)
  out[0] = DIRECT_TRACED
  out.set(trace.traceId, 1)
  out.set(trace.spanId, 17)
  out[25] = trace.flags & 0xff
  out.set(encoded, 1 + TRACE_BYTES)
  return out
}

export const envelope = (sealed: Uint8Array): Uint8Array => {
  const out = Buffer.allocUnsafe(1 + sealed.length)
  out[0] = ENVELOPE
  out.set(sealed, 1)
  return out
}

export type Parsed =
  | { readonly kind: typeof DIRECT; readonly body: Uint8Array; readonly trace: undefined }
  | { readonly kind: typeof DIRECT_TRACED; readonly body: Uint8Array; readonly trace: Envelope.TraceContext }
  | { readonly kind: typeof ENVELOPE; readonly body: Uint8Array; readonly trace: undefined }

/** Splits a slot into its kind and body (a view, not a copy); a string says what is wrong. */
export const parse = (bytes: Uint8Array): Parsed | string => {
  if (bytes.length === 0) return "empty message slot"
  const kind = bytes[0]
  switch (kind) {
    case DIRECT:
      return { kind, body: bytes.subarray(1), trace: undefined }
    case ENVELOPE:
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
