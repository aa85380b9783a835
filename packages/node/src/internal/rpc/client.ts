// The client side: @effect/rpc's client core (`RpcClient.makeNoSerialization`) with this layer's
// encoding and its own typed failures: the frames go to one peer on one stream of the port; the
// peer's answers come back through the port into this client's queue and fiber, in order. What
// `RpcClient.make` does with schemas (encode the payload, decode chunks and exits) is done here, so
// that a peer's answer that does not decode is a typed `RpcBadResponse`, not a defect.
import * as Rpc from "@effect/rpc/Rpc"
import * as RpcClient from "@effect/rpc/RpcClient"
import type * as RpcGroup from "@effect/rpc/RpcGroup"
import { RequestId } from "@effect/rpc/RpcMessage"
import * as RpcSchema from "@effect/rpc/RpcSchema"
import type { Identity } from "@hotstuff2/wire"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Option from "effect/Option"
import * as ParseResult from "effect/ParseResult"
import * as Queue from "effect/Queue"
import * as Schema from "effect/Schema"
import type * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import { RpcBadResponse, type RpcClientFailure, RpcRefused, RpcTimeout, RpcUnavailable } from "./errors.js"
import type { FromServer } from "./frames.js"
import type { RpcPort } from "./port.js"

type PeerId = Identity.PeerId

export interface ClientLimits {
  /** Per request (RPCs that return a stream: between two chunks); undefined: none. */
  readonly timeout: Duration.Duration | undefined
  /** Answers waiting for this client's fiber; past it they are dropped and counted. */
  readonly maxQueuedFrames: number
  /** A span per request, propagated to the server. */
  readonly tracing: boolean
}

interface Entry {
  readonly rpc: Rpc.AnyWithProps
  readonly decodeChunk:
    | ((u: ReadonlyArray<unknown>) => Effect.Effect<ReadonlyArray<unknown>, ParseResult.ParseError>)
    | undefined
  readonly decodeExit: (u: unknown) => Effect.Effect<Exit.Exit<unknown, unknown>, ParseResult.ParseError>
}

type Event =
  | FromServer
  | { readonly _tag: "Gone"; readonly reason: "disconnected" | "closed"; readonly detail: string }

const decodeDefect = Schema.decodeSync(Schema.Defect)

export const make = <Rpcs extends Rpc.Any>(
  port: RpcPort,
  group: RpcGroup.RpcGroup<Rpcs>,
  peer: PeerId,
  limits: ClientLimits
): Effect.Effect<
  RpcClient.RpcClient<Rpcs, RpcClientFailure>,
  never,
  Scope.Scope | Rpc.MiddlewareClient<Rpcs>
> =>
  Effect.gen(function* () {
    const entries = new Map<string, Entry>()
    const events = yield* Queue.unbounded<Event>()
    let queued = 0
    const stream = yield* port.open(peer, {
      receive: (frame) => {
        if (queued >= limits.maxQueuedFrames) return port.dropped("client-behind")
        queued++
        events.unsafeOffer(frame)
      },
      gone: (reason, detail) => {
        events.unsafeOffer({ _tag: "Gone", reason, detail })
      }
    })
    const send = (frame: unknown): Effect.Effect<void, RpcUnavailable | RpcRefused> =>
      port.send(peer, "request", port.encode(stream, frame))
    // The server frees this stream once its requests are done (runs after the interrupts below).
    yield* Effect.addFinalizer(() => Effect.ignore(send({ _tag: "Eof" })))

    const { client, write } = yield* RpcClient.makeNoSerialization(group, {
      supportsAck: true,
      disableTracing: !limits.tracing,
      onFromClient: ({ message }): Effect.Effect<void, RpcUnavailable | RpcRefused> => {
        switch (message._tag) {
          case "Request": {
            const rpc = group.requests.get(message.tag) as unknown as Rpc.AnyWithProps
            const id = String(message.id)
            const streamSchemas = RpcSchema.getStreamSchemas(rpc.successSchema.ast)
            entries.set(id, {
              rpc,
              decodeChunk: Option.isSome(streamSchemas)
                ? (Schema.decodeUnknown(Schema.Array(streamSchemas.value.success)) as Entry["decodeChunk"])
                : undefined,
              decodeExit: Schema.decodeUnknown(Rpc.exitSchema(rpc as any)) as Entry["decodeExit"]
            })
            return Schema.encode(rpc.payloadSchema as Schema.Schema<unknown, unknown>)(message.payload).pipe(
              Effect.orDie,
              Effect.flatMap((payload) =>
                send({ ...message, id, payload, headers: Object.entries(message.headers) })
              ),
              Effect.tapError(() => Effect.sync(() => entries.delete(id)))
            ) as Effect.Effect<void, RpcUnavailable | RpcRefused>
          }
          case "Ack":
            return entries.has(String(message.requestId))
              ? send({ _tag: "Ack", requestId: String(message.requestId) })
              : Effect.void
          case "Interrupt": {
            const id = String(message.requestId)
            if (!entries.delete(id)) return Effect.void
            return send({ _tag: "Interrupt", requestId: id })
          }
          case "Eof":
            return Effect.void
        }
      }
    })

    /** Ends request `id` with `error` (typed: the client's error channel includes it). */
    const fail = (id: string, error: RpcClientFailure) =>
      write({ _tag: "Exit", clientId: 0, requestId: RequestId(id), exit: Exit.fail(error) as any })

    const badResponse = (id: string, entry: Entry, error: ParseResult.ParseError) =>
      Effect.zipRight(
        port.refuse(peer, `RpcResponse: ${entry.rpc._tag} does not decode`),
        fail(
          id,
          new RpcBadResponse({
            peer,
            rpc: entry.rpc._tag,
            detail: ParseResult.TreeFormatter.formatErrorSync(error)
          })
        )
      )

    const handle = (event: Event): Effect.Effect<void> => {
      if (event._tag !== "Gone") queued--
      switch (event._tag) {
        case "Chunk": {
          const entry = entries.get(event.requestId)
          if (entry?.decodeChunk === undefined) return Effect.sync(() => port.dropped("unknown-request"))
          return Effect.matchEffect(entry.decodeChunk(event.values), {
            onFailure: (error) => {
              entries.delete(event.requestId)
              return Effect.zipRight(
                badResponse(event.requestId, entry, error),
                send({ _tag: "Interrupt", requestId: event.requestId }).pipe(Effect.ignore)
              )
            },
            onSuccess: (values) =>
              write({
                _tag: "Chunk",
                clientId: 0,
                requestId: RequestId(event.requestId),
                values: values as any
              })
          })
        }
        case "Exit": {
          const entry = entries.get(event.requestId)
          if (entry === undefined) return Effect.sync(() => port.dropped("unknown-request"))
          entries.delete(event.requestId)
          return Effect.matchEffect(entry.decodeExit(event.exit), {
            onFailure: (error) => badResponse(event.requestId, entry, error),
            onSuccess: (exit) =>
              write({ _tag: "Exit", clientId: 0, requestId: RequestId(event.requestId), exit: exit as any })
          })
        }
        case "Refused": {
          if (!entries.delete(event.requestId)) return Effect.sync(() => port.dropped("unknown-request"))
          return fail(
            event.requestId,
            new RpcRefused({ peer, reason: event.reason, limit: event.limit, size: event.size })
          )
        }
        case "Defect": {
          // @effect/rpc's rule: a defect of the server side ends every request of this client.
          entries.clear()
          return write({ _tag: "Defect", clientId: 0, defect: decodeDefect(event.defect) })
        }
        case "Pong":
          return Effect.void
        case "Gone": {
          const ids = [...entries.keys()]
          entries.clear()
          const error = new RpcUnavailable({ peer, reason: event.reason, detail: event.detail })
          return Effect.forEach(ids, (id) => fail(id, error), { discard: true })
        }
      }
    }
    yield* Effect.forkScoped(Effect.interruptible(Effect.forever(Effect.flatMap(Queue.take(events), handle))))

    if (limits.timeout !== undefined) withTimeouts(client, group, peer, limits.timeout)
    return client as RpcClient.RpcClient<Rpcs, RpcClientFailure>
  })

/** Wraps each method of `client` with the per-request timeout. */
const withTimeouts = (
  client: any,
  group: RpcGroup.RpcGroup<any>,
  peer: PeerId,
  timeout: Duration.Duration
) => {
  const millis = Duration.toMillis(timeout)
  for (const rpc of group.requests.values() as Iterable<Rpc.AnyWithProps>) {
    const dot = rpc._tag.indexOf(".")
    const target = dot === -1 ? client : client[rpc._tag.slice(0, dot)]
    const name = dot === -1 ? rpc._tag : rpc._tag.slice(dot + 1)
    const method = target[name]
    const onTimeout = () => new RpcTimeout({ peer, rpc: rpc._tag, timeoutMillis: millis })
    target[name] = RpcSchema.isStreamSchema(rpc.successSchema)
      ? (payload: unknown, options?: any) => {
          const result = method(payload, options)
          return options?.asMailbox ? result : Stream.timeoutFail(result, onTimeout, timeout)
        }
      : (payload: unknown, options?: any) =>
          Effect.timeoutFail(method(payload, options), { duration: timeout, onTimeout })
  }
}
