// The node's probe endpoint (Kubernetes liveness and readiness, or any supervisor), on node:http:
// `GET /healthz` is 200 while the node's layer is up; `GET /readyz` is 200 once the node listens and
// is connected to enough validators of the newest set for consensus to make progress, 503 before,
// with the counts as JSON either way. The server is opened last and closed first with the layer.
import * as http from "node:http"
import type * as net from "node:net"
import { Transport } from "@hotstuff2/transport"
import type { Identity } from "@hotstuff2/wire"
import * as Effect from "effect/Effect"
import * as Runtime from "effect/Runtime"
import { StartFailed } from "../NodeNetwork.js"

/** What `/readyz` reports. */
export interface Readiness {
  readonly ready: boolean
  /** The bound listen address of the node's transport. */
  readonly listening: string
  /** The newest validator set's epoch (decimal text: JSON has no bigint). */
  readonly epoch: string
  /** n: the newest validator set's size. */
  readonly validators: number
  /** f = floor((n - 1) / 3): the faulty validators the set tolerates. */
  readonly faultTolerance: number
  /** Other validators of the newest set connected now. */
  readonly connected: number
  /** Other validators needed: n - f, less this node when it is one of them (n - f - 1). */
  readonly required: number
}

/**
 * Readiness of a node that listens on `listening`, given the newest set and the peers connected now:
 * ready when the connected members of the set, with this node if it is a member, reach a quorum n - f.
 */
export const readiness = (options: {
  readonly self: Identity.PeerId
  readonly listening: string
  readonly epoch: bigint
  readonly validators: ReadonlyArray<Identity.PeerId>
  readonly connected: ReadonlySet<Identity.PeerId>
}): Readiness => {
  const n = options.validators.length
  const f = Math.floor((n - 1) / 3)
  const member = options.validators.includes(options.self)
  const required = Math.max(0, n - f - (member ? 1 : 0))
  const connected = options.validators.filter((v) => v !== options.self && options.connected.has(v)).length
  return {
    ready: connected >= required,
    listening: options.listening,
    epoch: options.epoch.toString(),
    validators: n,
    faultTolerance: f,
    connected,
    required
  }
}

const reply = (response: http.ServerResponse, status: number, body: unknown) => {
  const text = `${JSON.stringify(body)}\n`
  response.writeHead(status, {
    "content-type": "application/json; charset=utf-8",
    "content-length": Buffer.byteLength(text),
    "cache-control": "no-store"
  })
  response.end(text)
}

/**
 * Serves `/healthz` and `/readyz` on `address` (port 0: a free port) until the scope closes, which
 * closes the server and every connection to it. Returns the bound address. A bind that fails is a
 * `StartFailed { what: "health" }`.
 */
export const serve = (address: string, check: Effect.Effect<Readiness>) =>
  Effect.gen(function* () {
    const runtime = yield* Effect.runtime<never>()
    const run = Runtime.runPromise(runtime)
    const server = http.createServer((request, response) => {
      if (request.method !== "GET" && request.method !== "HEAD") {
        response.writeHead(405, { allow: "GET, HEAD" }).end()
        return
      }
      const path = (request.url ?? "/").split("?")[0]
      if (path === "/healthz") {
        reply(response, 200, { status: "up" })
        return
      }
      if (path !== "/readyz") {
        reply(response, 404, { error: `no ${path}: try /healthz or /readyz` })
        return
      }
      run(check).then(
        (r) => reply(response, r.ready ? 200 : 503, { status: r.ready ? "ready" : "not ready", ...r }),
        (error: unknown) => reply(response, 500, { status: "error", error: String(error) })
      )
    })
    const { host, port } = Transport.parseAddress(address)!
    return yield* Effect.acquireRelease(
      Effect.async<string, StartFailed>((resume) => {
        const failed = (error: Error) =>
          resume(
            Effect.fail(
              new StartFailed({
                what: "health",
                detail: `cannot serve /healthz and /readyz on ${address}: ${error.message}`
              })
            )
          )
        server.once("error", failed)
        server.listen({ host, port, exclusive: true }, () => {
          server.off("error", failed)
          const bound = server.address() as net.AddressInfo
          resume(Effect.succeed(Transport.formatAddress(host, bound.port)))
        })
        // Interrupted while binding: close the server, whichever way the bind goes.
        return Effect.sync(() => server.close())
      }),
      () =>
        Effect.async<void>((resume) => {
          server.close(() => resume(Effect.void))
          server.closeAllConnections()
        })
    )
  })
