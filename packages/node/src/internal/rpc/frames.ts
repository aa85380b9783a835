// RPC data (WIRE.md 7.7): a 4-byte stream id, then one MessagePack value (@effect/rpc's
// RpcSerialization.msgPack); the shapes of @effect/rpc's frames, checked before anything reads them.
import * as RpcSerialization from "@effect/rpc/RpcSerialization"
import * as Schema from "effect/Schema"

const STREAM_BYTES = 4
/** MessagePack nil, behind the data while decoding: how a value cut short shows (see `decode`). */
const SENTINEL = 0xc0

// One parser for encoding: msgpackr writes each value whole (its records defined inline), so values
// stay independent of each other. Decoding takes a fresh parser per value: the parser keeps what
// looks cut short for the next call, and one peer's bytes must never meet another's.
const encoder = RpcSerialization.msgPack.unsafeMake()

/** The RPC data of `value` on `stream`. */
export const encode = (stream: number, value: unknown): Uint8Array => {
  const body = encoder.encode(value) as Uint8Array
  const out = Buffer.allocUnsafe(STREAM_BYTES + body.length)
  out.writeUInt32BE(stream >>> 0, 0)
  out.set(body, STREAM_BYTES)
  return out
}

/** A decimal request id (a u64 as @effect/rpc writes it). */
const RequestId = Schema.String.pipe(Schema.pattern(/^[0-9]{1,20}$/))

/** The frames a client sends (@effect/rpc's `FromClientEncoded`). */
export const FromClient = Schema.Union(
  Schema.Struct({
    _tag: Schema.Literal("Request"),
    id: RequestId,
    tag: Schema.String,
    payload: Schema.Unknown,
    headers: Schema.Array(Schema.Tuple(Schema.String, Schema.String)),
    traceId: Schema.optional(Schema.String),
    spanId: Schema.optional(Schema.String),
    sampled: Schema.optional(Schema.Boolean)
  }),
  Schema.Struct({ _tag: Schema.Literal("Ack"), requestId: RequestId }),
  Schema.Struct({ _tag: Schema.Literal("Interrupt"), requestId: RequestId }),
  Schema.Struct({ _tag: Schema.Literal("Eof") }),
  Schema.Struct({ _tag: Schema.Literal("Ping") })
)
export type FromClient = typeof FromClient.Type

/** This layer's answer in place of a request it did not run or whose answer it did not send. */
export const Refused = Schema.Struct({
  _tag: Schema.Literal("Refused"),
  requestId: RequestId,
  reason: Schema.Literal("too-many-requests", "response-too-large", "not-served"),
  limit: Schema.Number,
  size: Schema.optional(Schema.Number)
})
export type Refused = typeof Refused.Type

/** The frames a server sends (@effect/rpc's `FromServerEncoded` but `ClientProtocolError`), or `Refused`. */
export const FromServer = Schema.Union(
  Schema.Struct({
    _tag: Schema.Literal("Chunk"),
    requestId: RequestId,
    values: Schema.NonEmptyArray(Schema.Unknown)
  }),
  Schema.Struct({ _tag: Schema.Literal("Exit"), requestId: RequestId, exit: Schema.Unknown }),
  Schema.Struct({ _tag: Schema.Literal("Defect"), defect: Schema.Unknown }),
  Schema.Struct({ _tag: Schema.Literal("Pong") }),
  Refused
)
export type FromServer = typeof FromServer.Type

// Built once: Schema validators are costly to build and cheap to run.
const isFromClient = Schema.is(FromClient)
const isFromServer = Schema.is(FromServer)

/** The stream and the value of RPC data, unchecked; a string says why it is refused. */
const read = (data: Uint8Array): { readonly stream: number; readonly value: unknown } | string => {
  if (data.length <= STREAM_BYTES) {
    return `RPC data of ${data.length} bytes: a 4-byte stream id and a value take at least 5`
  }
  const stream = Buffer.from(data.buffer, data.byteOffset, data.length).readUInt32BE(0)
  // The body and a sentinel nil: a whole value is followed by exactly that nil; a value cut short
  // swallows it or stays incomplete (the parser then returns fewer values), and trailing bytes give
  // more values.
  const body = new Uint8Array(data.length - STREAM_BYTES + 1)
  body.set(data.subarray(STREAM_BYTES))
  body[body.length - 1] = SENTINEL
  let values: ReadonlyArray<unknown>
  try {
    values = RpcSerialization.msgPack.unsafeMake().decode(body)
  } catch (error) {
    return `not MessagePack: ${error instanceof Error ? error.message : String(error)}`
  }
  if (values.length !== 2 || values[1] !== null) {
    return values.length < 2 ? "MessagePack value cut short" : "more than one MessagePack value"
  }
  return { stream, value: values[0] }
}

/** An `RpcRequest`'s data: its stream and frame; a string says why it is refused. */
export const decodeFromClient = (
  data: Uint8Array
): { readonly stream: number; readonly value: FromClient } | string => {
  const got = read(data)
  if (typeof got === "string") return got
  return isFromClient(got.value)
    ? (got as { stream: number; value: FromClient })
    : shapeError(got.value, "client")
}

/** An `RpcResponse`'s data: its stream and frame; a string says why it is refused. */
export const decodeFromServer = (
  data: Uint8Array
): { readonly stream: number; readonly value: FromServer } | string => {
  const got = read(data)
  if (typeof got === "string") return got
  return isFromServer(got.value)
    ? (got as { stream: number; value: FromServer })
    : shapeError(got.value, "server")
}

const shapeError = (value: unknown, side: "client" | "server"): string => {
  const tag = typeof value === "object" && value !== null ? (value as { _tag?: unknown })._tag : undefined
  return `not an RPC ${side} frame (${typeof tag === "string" ? `_tag ${JSON.stringify(tag.slice(0, 32))}` : typeof value})`
}
