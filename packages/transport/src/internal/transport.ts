// The Transport, whatever carries the bytes: listen with admission limits, dial, the handshake,
// refusals, timers on Effect's Clock, and a scope that closes everything. A `Backend` says how bytes
// move (sockets with TLS or plain TCP, or the simulated network) and proves keys where it can (TLS).
import type { Identity } from "@hotstuff2/wire"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as FiberSet from "effect/FiberSet"
import * as Queue from "effect/Queue"
import type * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import {
  type Authorize,
  type Connection,
  type Listener,
  type ListenOptions,
  type PeerId,
  parseAddress,
  type TransportShape
} from "../Transport.js"
import type { TransportConfig } from "../TransportConfig.js"
import { DialError, type HandshakeFailure, InboundRefused, ListenError } from "../TransportError.js"
import { ConnectionCore } from "./connection.js"
import { makeConnection, shutdownCore } from "./connectionApi.js"
import * as Handshake from "./handshake.js"
import type { Pipe } from "./pipe.js"
import * as Timers from "./timers.js"

/** One inbound connection attempt, before the handshake. */
export interface InboundAttempt {
  readonly remoteAddress: string
  /** The remote host, for the per-IP limit. */
  readonly remoteHost: string
  /** Finishes what the backend does before the handshake (TLS), giving the byte stream and the key a certificate proved. */
  readonly accept: Effect.Effect<
    { readonly pipe: Pipe; readonly pinnedPeer?: PeerId },
    Handshake.HandshakeError
  >
  /** Cuts the attempt at once. */
  readonly destroy: () => void
}

export interface Backend {
  readonly kind: string
  /** Whether the handshake must sign: yes where nothing else authenticates the key. */
  readonly signatures: boolean
  /** Binds `address` and reports each inbound attempt; unbinds when the scope closes. */
  readonly listen: (
    address: string,
    onInbound: (attempt: InboundAttempt) => void
  ) => Effect.Effect<
    { readonly address: string; readonly close: Effect.Effect<void> },
    ListenError,
    Scope.Scope
  >
  /** Opens a byte stream to `address`; a backend that can (TLS) checks the key before returning. */
  readonly connect: (
    address: string,
    expectedPeer: PeerId
  ) => Effect.Effect<
    { readonly pipe: Pipe; readonly pinnedPeer?: PeerId; readonly destroy: () => void },
    Handshake.HandshakeError
  >
  /** Cuts whatever the backend still holds, at shutdown after connections had their goodbye. */
  readonly shutdown: Effect.Effect<void>
}

export const make = (
  identity: Identity.Identity,
  config: TransportConfig,
  backend: Backend
): Effect.Effect<TransportShape, never, Scope.Scope> =>
  Effect.gen(function* () {
    const run = yield* FiberSet.makeRuntime<never>()
    const timers = yield* Timers.make
    const replay = new Handshake.ReplayCache()
    const live = new Set<ConnectionCore>()

    const handshakeOptions = (role: "dialer" | "listener") => ({
      identity,
      networkId: config.networkId,
      role,
      signatures: backend.signatures,
      maxClockSkew: config.maxClockSkew,
      replay
    })

    const open = (pipe: Pipe, direction: "inbound" | "outbound") => {
      const core = new ConnectionCore(pipe, {
        config,
        localPeer: identity.peerId,
        remoteAddress: pipe.remoteAddress,
        direction,
        timers
      })
      live.add(core)
      core.onClosed(() => live.delete(core))
      return core
    }

    // On release: every connection hands its queue and a goodbye to the network, within
    // `closeTimeout` (a peer that is not reading is cut at once); what did not finish is cut; then
    // the backend releases what it still holds (sockets whose bytes are already in the kernel).
    yield* Effect.addFinalizer(() =>
      Effect.gen(function* () {
        const finished = new Set<ConnectionCore>()
        yield* Effect.forEach(
          live,
          (core) =>
            Effect.tap(shutdownCore(core, "shutdown", "the node is shutting down"), () => finished.add(core)),
          { concurrency: "unbounded", discard: true }
        ).pipe(Effect.timeout(config.closeTimeout), Effect.ignore)
        for (const core of live) if (!finished.has(core)) core.destroy("shutdown", "did not flush in time")
        yield* backend.shutdown
      })
    )

    const handshakeMillis = Duration.toMillis(config.handshakeTimeout)
    const timeoutFailure = new Handshake.HandshakeError({
      reason: "timeout",
      detail: `no authenticated connection within ${Duration.format(config.handshakeTimeout)}`
    })

    const dial = (address: string, expectedPeer: PeerId): Effect.Effect<Connection, DialError> => {
      let destroy: (() => void) | undefined
      let core: ConnectionCore | undefined
      return Effect.gen(function* () {
        const connected = yield* backend.connect(address, expectedPeer)
        destroy = connected.destroy
        core = open(connected.pipe, "outbound")
        yield* Handshake.run(core, {
          ...handshakeOptions("dialer"),
          expectedPeer,
          pinnedPeer: connected.pinnedPeer
        })
        return makeConnection(core)
      }).pipe(
        Timers.deadline(timers, handshakeMillis, () => timeoutFailure),
        // On failure cut the stream, unless a goodbye telling the listener why is still being flushed.
        Effect.onExit((exit) =>
          Effect.sync(() => Exit.isSuccess(exit) || core?.state === "closing" || destroy?.())
        ),
        Effect.mapError((e) => new DialError({ address, expectedPeer, reason: e.reason, detail: e.detail })),
        Effect.withSpan("Transport.dial", {
          attributes: { address, peer: expectedPeer, transport: backend.kind }
        })
      )
    }

    const listen = (
      address: string,
      options: ListenOptions = {}
    ): Effect.Effect<Listener, ListenError, Scope.Scope> =>
      Effect.gen(function* () {
        if (parseAddress(address) === undefined) {
          return yield* new ListenError({ address, detail: "not a host:port address" })
        }
        const connections = yield* Effect.acquireRelease(Queue.unbounded<Connection>(), Queue.shutdown)
        const refusals = yield* Effect.acquireRelease(Queue.sliding<InboundRefused>(256), Queue.shutdown)
        const authorize: Authorize | undefined = options.authorize
        let handshaking = 0
        let inbound = 0
        const perHost = new Map<string, number>()
        const release = (host: string) => {
          const n = (perHost.get(host) ?? 1) - 1
          if (n <= 0) perHost.delete(host)
          else perHost.set(host, n)
        }

        /** Reports a refusal; cuts the attempt unless a goodbye is on its way (the core then closes it). */
        const refuse = (
          attempt: InboundAttempt,
          reason: HandshakeFailure,
          detail: string,
          peer?: PeerId,
          core?: ConnectionCore
        ) =>
          Effect.gen(function* () {
            const remote = attempt.remoteAddress
            yield* Effect.logWarning("inbound connection refused").pipe(
              Effect.annotateLogs({ remote, reason, detail, ...(peer ? { peer } : {}) })
            )
            yield* Queue.offer(
              refusals,
              new InboundRefused({ remoteAddress: remote, reason, detail, ...(peer ? { peer } : {}) })
            )
            if (core?.state !== "closing") attempt.destroy()
          })

        const overLimit = (): string | undefined => {
          if (handshaking >= config.maxConcurrentHandshakes) {
            return `${handshaking} handshakes in progress (max ${config.maxConcurrentHandshakes})`
          }
          if (inbound >= config.maxInboundConnections) {
            return `${inbound} inbound connections (max ${config.maxInboundConnections})`
          }
          return undefined
        }

        const onInbound = (attempt: InboundAttempt) => {
          const host = attempt.remoteHost
          const fromHost = perHost.get(host) ?? 0
          const limit =
            overLimit() ??
            (fromHost >= config.maxConnectionsPerIp
              ? `${fromHost} connections from ${host} (max ${config.maxConnectionsPerIp})`
              : undefined)
          if (limit !== undefined) {
            run(refuse(attempt, "over-limit", limit))
            return
          }
          // Counted from the attempt until it is refused, or until the accepted connection closes.
          perHost.set(host, fromHost + 1)
          handshaking++
          let core: ConnectionCore | undefined
          run(
            Effect.gen(function* () {
              const accepted = yield* attempt.accept
              core = open(accepted.pipe, "inbound")
              yield* Handshake.run(core, {
                ...handshakeOptions("listener"),
                authorize,
                pinnedPeer: accepted.pinnedPeer
              })
              return core
            }).pipe(
              Timers.deadline(timers, handshakeMillis, () => timeoutFailure),
              Effect.ensuring(Effect.sync(() => handshaking--)),
              Effect.matchEffect({
                onFailure: (e) => {
                  // A refused connection still flushing its goodbye holds its place until it closes.
                  if (core?.state === "closing") core.onClosed(() => release(host))
                  else release(host)
                  return refuse(attempt, e.reason, e.detail, e.peer, core)
                },
                onSuccess: (core) => {
                  inbound++
                  core.onClosed(() => {
                    inbound--
                    release(host)
                  })
                  return Queue.offer(connections, makeConnection(core))
                }
              }),
              Effect.onInterrupt(() => Effect.sync(() => attempt.destroy()))
            )
          )
        }

        const bound = yield* backend.listen(address, onInbound)
        return {
          address: bound.address,
          connections: Stream.fromQueue(connections, { maxChunkSize: 1 }),
          refusals: Stream.fromQueue(refusals, { maxChunkSize: 1 }),
          close: bound.close
        } satisfies Listener
      }).pipe(Effect.withSpan("Transport.listen", { attributes: { address, transport: backend.kind } }))

    return { localPeer: identity.peerId, listen, dial } satisfies TransportShape
  })
