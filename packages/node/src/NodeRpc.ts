/**
 * Request/response between validators (block sync, recovery) with `@effect/rpc`, over the sync
 * channel, point to point: a server for an `RpcGroup` that answers every peer, and a client per
 * peer. Correlation, streaming and interrupts are @effect/rpc's; this module adds what a network of
 * validators needs: typed failures to retry on another peer (`RpcUnavailable`, `RpcTimeout`,
 * `RpcRefused`, `RpcBadResponse`), a timeout per request, bounds per peer and per response, the
 * asking peer's id in every request's headers, and bad input refused and charged to its sender.
 *
 * Frames (WIRE.md 7.7) are `RpcRequest` and `RpcResponse` messages, MessagePack inside; the node
 * takes them off the sync channel in each connection's reader, so they never appear on `messages`
 * and are answered whatever the consumer of `messages` is doing (a consensus loop that waits on a
 * sync request does not block its own answer).
 */
import type * as Headers from "@effect/platform/Headers"
import type * as Rpc from "@effect/rpc/Rpc"
import type * as RpcClient from "@effect/rpc/RpcClient"
import type * as RpcGroup from "@effect/rpc/RpcGroup"
import * as RpcServer from "@effect/rpc/RpcServer"
import { Message } from "@hotstuff2/wire"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import type * as Scope from "effect/Scope"
import * as internalClient from "./internal/rpc/client.js"
import type { RpcClientFailure } from "./internal/rpc/errors.js"
import { portOf } from "./internal/rpc/port.js"
import * as internalServer from "./internal/rpc/server.js"
import { NodeNetwork, type PeerId } from "./NodeNetwork.js"

export {
  RpcBadResponse,
  type RpcClientFailure,
  RpcRefused,
  RpcTimeout,
  RpcUnavailable
} from "./internal/rpc/errors.js"

/** The header a server sets on every request to the asking peer's PeerId (any such header the client sent is replaced). */
export const PEER_HEADER = internalServer.PEER_HEADER

/** The peer that sent a request, from the headers a handler is given (`NodeRpc.layerServer` sets it). */
export const peerOf = (headers: Headers.Headers): Option.Option<PeerId> =>
  Option.fromNullable(headers[PEER_HEADER] as PeerId | undefined)

/** `maxInFlightPerPeer` when none is given. */
export const defaultMaxInFlightPerPeer = 16
/** `maxResponseBytes` when none is given: 4 MiB of RPC data per response frame. */
export const defaultMaxResponseBytes = 4 * 1024 * 1024
/** `timeout` when none is given. */
export const defaultTimeout: Duration.Duration = Duration.seconds(10)
/** `maxQueuedFrames` when none is given. */
export const defaultMaxQueuedFrames = 256

export interface ServerOptions {
  /**
   * Requests of one peer being served at once, over all its clients (default 16). One more is not
   * run: its client gets `RpcRefused` (`too-many-requests`) at once.
   */
  readonly maxInFlightPerPeer?: number
  /**
   * Bytes of RPC data in one response frame (an exit, or a chunk of a stream), at most
   * `Message.MAX_RPC_DATA_BYTES` (16 MiB - 1 KiB); default 4 MiB. A larger one is not sent: the
   * client gets `RpcRefused` (`response-too-large`, with the size), and a stream stops there.
   */
  readonly maxResponseBytes?: number
  /** Spans per request (`RpcServer.<tag>`, children of the client's span: span propagation is on). Default true. */
  readonly tracing?: boolean
}

export interface ClientOptions {
  /**
   * Each request fails with `RpcTimeout` after this long without its answer, and is interrupted at
   * the server; for an RPC that returns a stream, this long without a chunk. Default 10 seconds;
   * `"none"`: no timeout (interrupt the request yourself).
   */
  readonly timeout?: Duration.DurationInput | "none"
  /** Answers waiting for this client's fiber (default 256); more are dropped and counted. */
  readonly maxQueuedFrames?: number
  /** A span per request (`RpcClient.<tag>`), propagated to the server. Default true. */
  readonly tracing?: boolean
}

const positiveInt = (name: string, value: number, max: number): Effect.Effect<number> =>
  Number.isInteger(value) && value >= 1 && value <= max
    ? Effect.succeed(value)
    : Effect.dieMessage(`NodeRpc: ${name} must be an integer from 1 to ${max}, not ${value}`)

/**
 * Serves `group` to every peer of the `NodeNetwork` in context, over the sync channel, until the
 * layer closes (one server per node). Each (peer, client) is one @effect/rpc client: a peer that
 * disconnects ends its clients and interrupts their handlers. Handlers learn who asked with
 * `peerOf(headers)`. A request for an RPC this group lacks is answered with a defect, as
 * @effect/rpc does; a node without a server answers every request with `RpcRefused`
 * (`not-served`).
 */
export const layerServer = <Rpcs extends Rpc.Any>(
  group: RpcGroup.RpcGroup<Rpcs>,
  options: ServerOptions = {}
): Layer.Layer<never, never, NodeNetwork | Rpc.ToHandler<Rpcs> | Rpc.Context<Rpcs> | Rpc.Middleware<Rpcs>> =>
  Layer.scopedDiscard(
    Effect.gen(function* () {
      const port = yield* Effect.flatMap(NodeNetwork, portOf)
      const protocol = yield* internalServer.makeProtocol(port, {
        maxInFlightPerPeer: yield* positiveInt(
          "maxInFlightPerPeer",
          options.maxInFlightPerPeer ?? defaultMaxInFlightPerPeer,
          Number.MAX_SAFE_INTEGER
        ),
        maxResponseBytes: yield* positiveInt(
          "maxResponseBytes",
          options.maxResponseBytes ?? defaultMaxResponseBytes,
          Message.MAX_RPC_DATA_BYTES
        )
      })
      yield* RpcServer.make(group, { disableTracing: options.tracing === false }).pipe(
        Effect.provideService(RpcServer.Protocol, protocol),
        Effect.interruptible,
        Effect.forkScoped
      )
    })
  )

/**
 * A client of `group` at one peer, until the scope closes (its requests in flight are then
 * interrupted, and the server is told). Each method fails, besides with the RPC's own error, with
 * `RpcUnavailable` (the peer is not connected, disconnected while the request was in flight, is
 * backed up, or this node's network closed), `RpcTimeout`, `RpcRefused` (a bound, at either end)
 * or `RpcBadResponse` (an answer that does not decode; the peer is reported): each a reason to ask
 * another peer. Many requests may be in flight at once; each answer finds its request by id.
 */
export const client = <Rpcs extends Rpc.Any>(
  group: RpcGroup.RpcGroup<Rpcs>,
  peer: PeerId,
  options: ClientOptions = {}
): Effect.Effect<
  RpcClient.RpcClient<Rpcs, RpcClientFailure>,
  never,
  NodeNetwork | Scope.Scope | Rpc.MiddlewareClient<Rpcs>
> =>
  Effect.gen(function* () {
    const port = yield* Effect.flatMap(NodeNetwork, portOf)
    const timeout = options.timeout ?? defaultTimeout
    return yield* internalClient.make(port, group, peer, {
      timeout: timeout === "none" ? undefined : Duration.decode(timeout),
      maxQueuedFrames: yield* positiveInt(
        "maxQueuedFrames",
        options.maxQueuedFrames ?? defaultMaxQueuedFrames,
        Number.MAX_SAFE_INTEGER
      ),
      tracing: options.tracing !== false
    })
  })
