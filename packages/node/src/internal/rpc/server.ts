// The server side: an @effect/rpc `RpcServer.Protocol` over the port. Each (peer, stream) is one
// @effect/rpc client id; a peer's disconnect ends its clients (their handlers are interrupted). The
// protocol enforces the bounds: requests in flight per peer, and the size of each response frame.
import * as RpcServer from "@effect/rpc/RpcServer"
import type { Identity } from "@hotstuff2/wire"
import * as Effect from "effect/Effect"
import * as Mailbox from "effect/Mailbox"
import * as Option from "effect/Option"
import type * as Scope from "effect/Scope"
import type { FromClient } from "./frames.js"
import type { RpcPort } from "./port.js"

type PeerId = Identity.PeerId

/** The header a server sets on every request: the hex PeerId of the peer that sent it. */
export const PEER_HEADER = "x-hotstuff2-peer"

export interface ServerLimits {
  readonly maxInFlightPerPeer: number
  readonly maxResponseBytes: number
}

interface Client {
  readonly id: number
  readonly peer: PeerId
  readonly stream: number
  /** Its requests being served (counted against its peer). */
  readonly inFlight: Set<string>
  /** Requests whose answer was refused as too large: their later Exit is not sent. */
  readonly refused: Set<string>
}

export const makeProtocol = (
  port: RpcPort,
  limits: ServerLimits
): Effect.Effect<RpcServer.Protocol["Type"], never, Scope.Scope> =>
  RpcServer.Protocol.make((write) =>
    Effect.gen(function* () {
      const disconnects = yield* Mailbox.make<number>()
      const byKey = new Map<string, Client>()
      const byId = new Map<number, Client>()
      const perPeer = new Map<PeerId, number>()
      let nextId = 1

      const keyOf = (peer: PeerId, stream: number) => `${peer}/${stream}`

      const release = (client: Client, requestId: string) => {
        if (!client.inFlight.delete(requestId)) return
        const n = (perPeer.get(client.peer) ?? 1) - 1
        if (n <= 0) perPeer.delete(client.peer)
        else perPeer.set(client.peer, n)
      }

      const forget = (client: Client) => {
        for (const requestId of [...client.inFlight]) release(client, requestId)
        byKey.delete(keyOf(client.peer, client.stream))
        byId.delete(client.id)
      }

      const sendTo = (client: Client, frame: unknown) =>
        Effect.ignore(port.send(client.peer, "response", port.encode(client.stream, frame)))

      const receive = (peer: PeerId, stream: number, frame: FromClient): Effect.Effect<void> => {
        let client = byKey.get(keyOf(peer, stream))
        if (client === undefined) {
          client = { id: nextId++, peer, stream, inFlight: new Set(), refused: new Set() }
          byKey.set(keyOf(peer, stream), client)
          byId.set(client.id, client)
        }
        if (frame._tag !== "Request") return write(client.id, frame)
        if (client.inFlight.has(frame.id)) {
          // @effect/rpc would wait for the first to end, in this port's one reader fiber.
          return port.refuse(peer, `RpcRequest: request id ${frame.id} is in flight already`)
        }
        const busy = perPeer.get(peer) ?? 0
        if (busy >= limits.maxInFlightPerPeer) {
          return sendTo(client, {
            _tag: "Refused",
            requestId: frame.id,
            reason: "too-many-requests",
            limit: limits.maxInFlightPerPeer
          })
        }
        client.inFlight.add(frame.id)
        perPeer.set(peer, busy + 1)
        // Who asked is this node's word, never the client's.
        const headers: Array<[string, string]> = []
        for (const [name, value] of frame.headers) {
          if (name.toLowerCase() !== PEER_HEADER) headers.push([name, value])
        }
        headers.push([PEER_HEADER, peer])
        return write(client.id, { ...frame, headers })
      }

      yield* port.serve({
        receive,
        gone: (peer) => {
          for (const client of [...byId.values()]) {
            if (client.peer !== peer) continue
            forget(client)
            disconnects.unsafeOffer(client.id)
          }
        }
      })

      return {
        disconnects,
        send: (clientId, response) =>
          Effect.suspend(() => {
            const client = byId.get(clientId)
            if (client === undefined) return Effect.void
            if (response._tag === "Exit") {
              release(client, response.requestId)
              if (client.refused.delete(response.requestId)) return Effect.void
            }
            const data = port.encode(client.stream, response)
            if (data.length <= limits.maxResponseBytes) {
              return Effect.ignore(port.send(client.peer, "response", data))
            }
            if (response._tag !== "Exit" && response._tag !== "Chunk") {
              return Effect.logWarning(`NodeRpc: a ${response._tag} frame of ${data.length} bytes not sent`)
            }
            const refusal = sendTo(client, {
              _tag: "Refused",
              requestId: response.requestId,
              reason: "response-too-large",
              limit: limits.maxResponseBytes,
              size: data.length
            })
            if (response._tag === "Exit") return refusal
            // A chunk too large: the client is told, and the stream stops as if the client had
            // interrupted it (its Exit is then not sent).
            release(client, response.requestId)
            client.refused.add(response.requestId)
            return Effect.zipRight(
              refusal,
              write(clientId, { _tag: "Interrupt", requestId: response.requestId })
            )
          }),
        end: (clientId) =>
          Effect.sync(() => {
            const client = byId.get(clientId)
            if (client !== undefined) forget(client)
          }),
        clientIds: Effect.sync(() => new Set(byId.keys())),
        initialMessage: Effect.succeed(Option.none()),
        supportsAck: true,
        supportsTransferables: false,
        supportsSpanPropagation: true
      }
    })
  )
