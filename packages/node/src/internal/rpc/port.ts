// The node's end of request/response: one fiber per node reads the RPC messages the peer manager
// diverts off the sync channel (they never reach `messages`, and they arrive whatever the consumer of
// `messages` is doing), checks them, and hands each to this node's server or to the client whose
// stream it names. Sends go through the broadcaster's bare `send`. `NodeRpc` finds the port of a
// `NodeNetwork` through `portOf`.
import { Broadcaster } from "@hotstuff2/broadcast"
import type { PeerManager, PeerRegistry } from "@hotstuff2/peers"
import { TransportConfig } from "@hotstuff2/transport"
import { type Identity, Message } from "@hotstuff2/wire"
import * as Effect from "effect/Effect"
import type * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import type { NodeNetworkShape } from "../../NodeNetwork.js"
import { RpcRefused, RpcUnavailable } from "./errors.js"
import { decodeFromClient, decodeFromServer, encode, type FromClient, type FromServer } from "./frames.js"

type PeerId = Identity.PeerId

const SYNC = TransportConfig.Channel.sync

/** Why an RPC message was dropped without a refusal (it may be late: no reputation cost). */
export type DropReason = "unknown-stream" | "unknown-request" | "client-behind"

/** This node's RPC server, as the port hands it requests. */
export interface ServerSink {
  readonly receive: (peer: PeerId, stream: number, frame: FromClient) => Effect.Effect<void>
  /** The peer disconnected: its clients are gone. */
  readonly gone: (peer: PeerId) => void
}

/** One client, as the port hands it its peer's responses. */
export interface ClientSink {
  /** Synchronous: the client queues it for its own fiber. */
  readonly receive: (frame: FromServer) => void
  /** Its peer disconnected, or the node closed: what is in flight will get no answer. */
  readonly gone: (reason: "disconnected" | "closed", detail: string) => void
}

export interface RpcPort {
  readonly self: PeerId
  /** The RPC data of `frame` on `stream`. */
  readonly encode: (stream: number, frame: unknown) => Uint8Array
  /** Sends RPC data to `peer`, bare, on the sync channel. */
  readonly send: (
    peer: PeerId,
    kind: "request" | "response",
    data: Uint8Array
  ) => Effect.Effect<void, RpcUnavailable | RpcRefused>
  /** Makes `sink` this node's server until the scope closes (one at a time). */
  readonly serve: (sink: ServerSink) => Effect.Effect<void, never, Scope.Scope>
  /** A new client stream to `peer` until the scope closes: its id. */
  readonly open: (peer: PeerId, sink: ClientSink) => Effect.Effect<number, never, Scope.Scope>
  /** Bad input from `peer`: counted as a malformed rejection, and the peer reported. */
  readonly refuse: (peer: PeerId, detail: string) => Effect.Effect<void>
  readonly dropped: (why: DropReason) => void
}

const ports = new WeakMap<NodeNetworkShape, RpcPort>()

/** Links a node's port to its network (internal/network.ts, when it builds the node). */
export const register = (net: NodeNetworkShape, port: RpcPort): void => {
  ports.set(net, port)
}

/** The port of a node built by `NodeNetwork.layer` or `layerTest`. */
export const portOf = (net: NodeNetworkShape): Effect.Effect<RpcPort> => {
  const port = ports.get(net)
  return port === undefined
    ? Effect.dieMessage("NodeRpc needs a NodeNetwork built by NodeNetwork.layer or NodeNetwork.layerTest")
    : Effect.succeed(port)
}

/** Builds the port in the node's scope and starts its reader. */
export const make = (deps: {
  readonly self: PeerId
  readonly manager: PeerManager.PeerManagerShape
  readonly registry: PeerRegistry.PeerRegistryShape
  readonly send: (peer: PeerId, message: Message.Message) => Effect.Effect<void, Broadcaster.SendError>
  readonly rejected: (rejection: Broadcaster.Rejection) => void
  readonly dropped: (why: DropReason) => void
}): Effect.Effect<RpcPort, never, Scope.Scope> =>
  Effect.gen(function* () {
    let server: ServerSink | undefined
    const clients = new Map<number, { readonly peer: PeerId; readonly sink: ClientSink }>()
    let nextStream = 1
    let closed = false

    const refuse = (peer: PeerId, detail: string) =>
      Effect.suspend(() => {
        deps.rejected({ peer, channel: SYNC, reason: "malformed", detail })
        return Effect.asVoid(deps.registry.report(peer, "InvalidMessage", detail))
      })

    const notServed = (peer: PeerId, stream: number, frame: FromClient) =>
      frame._tag !== "Request"
        ? Effect.void
        : Effect.ignore(
            send(
              peer,
              "response",
              encode(stream, { _tag: "Refused", requestId: frame.id, reason: "not-served", limit: 0 })
            )
          )

    /** One diverted slot: checked, then handed to its server or client. */
    const handle = (peer: PeerId, slot: Uint8Array): Effect.Effect<void> => {
      const read = Broadcaster.readDirectSlot(slot)
      if (typeof read === "string") return refuse(peer, read)
      const message = read.message
      if (message._tag === "RpcRequest") {
        const frame = decodeFromClient(message.data)
        if (typeof frame === "string") return refuse(peer, `RpcRequest: ${frame}`)
        return server === undefined
          ? notServed(peer, frame.stream, frame.value)
          : server.receive(peer, frame.stream, frame.value)
      }
      if (message._tag === "RpcResponse") {
        const frame = decodeFromServer(message.data)
        if (typeof frame === "string") return refuse(peer, `RpcResponse: ${frame}`)
        const client = clients.get(frame.stream)
        if (client === undefined || client.peer !== peer) deps.dropped("unknown-stream")
        else client.sink.receive(frame.value)
        return Effect.void
      }
      // The divert picks these two types by their type byte: anything else decoded is a defect.
      return refuse(peer, `${message._tag} diverted as an RPC message`)
    }

    yield* Effect.forkScoped(
      Effect.interruptible(
        Stream.runForEach(deps.manager.inboundDiverted, (frame) =>
          Effect.forEach(frame.messages, (slot) => handle(frame.peer, slot), { discard: true })
        )
      )
    )
    yield* Effect.forkScoped(
      Effect.interruptible(
        Stream.runForEach(deps.registry.changes, (event) =>
          Effect.sync(() => {
            if (event._tag !== "Disconnected") return
            server?.gone(event.peer)
            for (const client of clients.values()) {
              if (client.peer === event.peer) client.sink.gone("disconnected", event.reason)
            }
          })
        )
      )
    )
    yield* Effect.addFinalizer(() =>
      Effect.sync(() => {
        closed = true
        for (const client of clients.values()) client.sink.gone("closed", "the node's network closed")
      })
    )

    const send: RpcPort["send"] = (peer, kind, data) => {
      if (data.length > Message.MAX_RPC_DATA_BYTES) {
        return Effect.fail(
          new RpcRefused({
            peer,
            reason: "request-too-large",
            limit: Message.MAX_RPC_DATA_BYTES,
            size: data.length
          })
        )
      }
      if (closed) {
        return Effect.fail(
          new RpcUnavailable({ peer, reason: "closed", detail: "the node's network closed" })
        )
      }
      const message =
        kind === "request" ? Message.RpcRequest.make({ data }) : Message.RpcResponse.make({ data })
      return Effect.mapError(deps.send(peer, message), (error) => {
        switch (error._tag) {
          case "PeerNotConnected":
            return new RpcUnavailable({ peer, reason: "not-connected", detail: error.message })
          case "Backpressure":
            return new RpcUnavailable({ peer, reason: "backpressure", detail: error.message })
          default:
            return new RpcUnavailable({ peer, reason: "disconnected", detail: error.message })
        }
      })
    }

    return {
      self: deps.self,
      encode,
      send,
      refuse,
      dropped: deps.dropped,
      serve: (sink) =>
        Effect.acquireRelease(
          Effect.suspend(() =>
            server === undefined
              ? Effect.sync(() => {
                  server = sink
                })
              : Effect.dieMessage("this node serves RPC already: one NodeRpc.layerServer per node")
          ),
          () =>
            Effect.sync(() => {
              if (server === sink) server = undefined
            })
        ),
      open: (peer, sink) =>
        Effect.acquireRelease(
          Effect.sync(() => {
            const stream = nextStream
            nextStream = nextStream >= 0xffff_ffff ? 1 : nextStream + 1
            clients.set(stream, { peer, sink })
            if (closed) sink.gone("closed", "the node's network closed")
            return stream
          }),
          (stream) => Effect.sync(() => clients.delete(stream))
        )
    } satisfies RpcPort
  })
