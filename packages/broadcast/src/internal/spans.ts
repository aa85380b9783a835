// Tracing: W3C trace contexts in and out of messages, the attributes of send and receive spans.
// Nothing here runs unless the broadcaster was built with `tracing: true`.
import type { Envelope, Message } from "@hotstuff2/wire"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as Tracer from "effect/Tracer"
import { channelOf } from "./channels.js"

const hex = (bytes: Uint8Array): string =>
  Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length).toString("hex")

const fromHex = (text: string, length: number): Uint8Array | undefined => {
  if (text.length !== length * 2) return undefined
  const bytes = Buffer.from(text, "hex")
  return bytes.length === length ? bytes : undefined
}

/** The current span as a W3C trace context, when it has one of the right form. */
export const currentTrace: Effect.Effect<Envelope.TraceContext | undefined> = Effect.map(
  Effect.option(Effect.currentSpan),
  Option.match({
    onNone: () => undefined,
    onSome: (span) => {
      const traceId = fromHex(span.traceId, 16)
      const spanId = fromHex(span.spanId, 8)
      return traceId && spanId ? { traceId, spanId, flags: span.sampled ? 1 : 0 } : undefined
    }
  })
)

/** The consensus view a message names, if any (a span attribute). */
export const viewOf = (message: Message.Message): string | undefined =>
  "view" in message ? String(message.view) : undefined

export const typeAttributes = (message: Message.Message, channel: number) => {
  const attributes: Record<string, unknown> = { "message.type": message._tag, channel }
  const view = viewOf(message)
  if (view !== undefined) attributes.view = view
  return attributes
}

export const spanAttributes = (message: Message.Message, channel: number, size: number) => ({
  ...typeAttributes(message, channel),
  size
})

/** `effect` in a producer span named `name` when tracing is on; as it is otherwise. */
export const withSpan = <A, E, R>(
  tracing: boolean,
  name: string,
  message: Message.Message,
  attributes: Record<string, unknown>,
  effect: Effect.Effect<A, E, R>
): Effect.Effect<A, E, R> =>
  tracing
    ? Effect.withSpan(effect, name, {
        kind: "producer",
        // The size is known once the message is encoded: the span is annotated with it then.
        attributes: { ...typeAttributes(message, channelOf(message._tag) ?? -1), ...attributes }
      })
    : effect

/** Runs `effect` in a consumer span whose parent is the sender's span (`trace`). */
export const receiveSpan = <A>(
  trace: Envelope.TraceContext,
  tracer: Tracer.Tracer | undefined,
  effect: Effect.Effect<A>
): Effect.Effect<A> => {
  const spanned = effect.pipe(
    Effect.withSpan("Broadcaster.receive", {
      kind: "consumer",
      parent: Tracer.externalSpan({
        traceId: hex(trace.traceId),
        spanId: hex(trace.spanId),
        sampled: (trace.flags & 1) === 1
      })
    })
  )
  return tracer === undefined ? spanned : Effect.withTracer(spanned, tracer)
}
