// The Transport over real sockets, shared by TLS and TCP: listen with admission limits, dial, the
// handshake, timers on Effect's Clock, and a scope that closes everything. The flavour decides how a
// raw socket becomes an authenticated byte stream (TLS with a pinned certificate, or plain TCP).
import * as net from "node:net"
import type { Identity } from "@hotstuff2/wire"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as FiberId from "effect/FiberId"
import * as FiberSet from "effect/FiberSet"
import * as Queue from "effect/Queue"
import type * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import {
  type Authorize,
  type Connection,
  formatAddress,
  type Listener,
  type ListenOptions,
  type PeerId,
  parseAddress,
  type TransportShape
} from "../Transport.js"
import type { TransportConfig } from "../TransportConfig.js"
import { DialError, type HandshakeFailure, InboundRefused, ListenError } from "../TransportError.js"
import { ConnectionCore, type Timers } from "./connection.js"
import { closeCore, makeConnection } from "./connectionApi.js"
import * as Handshake from "./handshake.js"
import type { Pipe } from "./pipe.js"
import { socketPipe } from "./socketPipe.js"

/** How a flavour turns sockets into authenticated byte streams. */
export interface SocketFlavor {
  readonly kind: "tls" | "tcp"
  /** Whether the handshake must sign: yes where nothing else authenticates the key. */
  readonly signatures: boolean
  /** Server side: a raw accepted socket to a byte stream, and the key its certificate proved (TLS). */
  readonly accept: (
    socket: net.Socket
  ) => Effect.Effect<{ readonly socket: net.Socket; readonly pinnedPeer?: PeerId }, Handshake.HandshakeError>
  /** Client side: connect and, for TLS, check the certificate against `expectedPeer` before any byte is read. */
  readonly connect: (
    host: string,
    port: number,
    expectedPeer: PeerId
  ) => Effect.Effect<{ readonly socket: net.Socket; readonly pinnedPeer?: PeerId }, Handshake.HandshakeError>
}

/** Waits for one of a socket's events; fails on 'error' or 'close' first. Removes its listeners. */
export const awaitSocket = (
  socket: net.Socket,
  event: string,
  failure: HandshakeFailure
): Effect.Effect<void, Handshake.HandshakeError> =>
  Effect.async<void, Handshake.HandshakeError>((resume) => {
    const done = () => {
      socket.off(event, onEvent)
      socket.off("error", onError)
      socket.off("close", onClose)
    }
    const onEvent = () => {
      done()
      resume(Effect.void)
    }
    const onError = (error: Error) => {
      done()
      resume(Effect.fail(new Handshake.HandshakeError({ reason: failure, detail: error.message })))
    }
    const onClose = () => {
      done()
      resume(Effect.fail(new Handshake.HandshakeError({ reason: "closed", detail: "socket closed" })))
    }
    socket.once(event, onEvent)
    socket.once("error", onError)
    socket.once("close", onClose)
    return Effect.sync(done)
  })

const remoteOf = (socket: net.Socket): string =>
  formatAddress(socket.remoteAddress ?? "unknown", socket.remotePort ?? 0)

export const make = (
  identity: Identity.Identity,
  config: TransportConfig,
  flavor: SocketFlavor
): Effect.Effect<TransportShape, never, Scope.Scope> =>
  Effect.gen(function* () {
    const run = yield* FiberSet.makeRuntime<never>()
    const timers: Timers = (millis, f) => {
      const fiber = run(Effect.sleep(Duration.millis(millis)).pipe(Effect.andThen(Effect.sync(f))))
      return () => fiber.unsafeInterruptAsFork(FiberId.none)
    }
    const replay = new Handshake.ReplayCache()
    const live = new Set<ConnectionCore>()
    const sockets = new Set<net.Socket>()

    const track = (socket: net.Socket) => {
      sockets.add(socket)
      socket.once("close", () => sockets.delete(socket))
    }

    const handshakeOptions = (role: "dialer" | "listener") => ({
      identity,
      networkId: config.networkId,
      role,
      signatures: flavor.signatures,
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

    // On release: stop everything. Connections get a goodbye and `closeTimeout` to flush.
    yield* Effect.addFinalizer(() =>
      Effect.gen(function* () {
        yield* Effect.forEach(live, (core) => closeCore(core, "shutdown", "the node is shutting down"), {
          concurrency: "unbounded",
          discard: true
        }).pipe(Effect.timeout(config.closeTimeout), Effect.ignore)
        for (const core of live) core.destroy("shutdown", "closed at shutdown")
        for (const socket of sockets) socket.destroy()
      })
    )

    const timeoutFailure = new Handshake.HandshakeError({
      reason: "timeout",
      detail: `no authenticated connection within ${Duration.format(config.handshakeTimeout)}`
    })

    const dial = (address: string, expectedPeer: PeerId): Effect.Effect<Connection, DialError> => {
      const failWith = (reason: HandshakeFailure, detail: string) =>
        new DialError({ address, expectedPeer, reason, detail })
      const parsed = parseAddress(address)
      if (parsed === undefined) return Effect.fail(failWith("unreachable", "not a host:port address"))
      let socket: net.Socket | undefined
      let core: ConnectionCore | undefined
      return Effect.gen(function* () {
        const connected = yield* flavor.connect(parsed.host, parsed.port, expectedPeer)
        socket = connected.socket
        track(socket)
        core = open(socketPipe(socket, address), "outbound")
        yield* Handshake.run(core, {
          ...handshakeOptions("dialer"),
          expectedPeer,
          pinnedPeer: connected.pinnedPeer
        })
        return makeConnection(core)
      }).pipe(
        Effect.timeoutFail({ duration: config.handshakeTimeout, onTimeout: () => timeoutFailure }),
        // On failure cut the socket, unless a goodbye telling the listener why is still being flushed.
        Effect.onExit((exit) =>
          Effect.sync(() => Exit.isSuccess(exit) || core?.state === "closing" || socket?.destroy())
        ),
        Effect.mapError((e) => failWith(e.reason, e.detail)),
        Effect.withSpan("Transport.dial", {
          attributes: { address, peer: expectedPeer, transport: flavor.kind }
        })
      )
    }

    const listen = (
      address: string,
      options: ListenOptions = {}
    ): Effect.Effect<Listener, ListenError, Scope.Scope> =>
      Effect.gen(function* () {
        const parsed = parseAddress(address)
        if (parsed === undefined)
          return yield* new ListenError({ address, detail: "not a host:port address" })
        const connections = yield* Effect.acquireRelease(Queue.unbounded<Connection>(), Queue.shutdown)
        const refusals = yield* Effect.acquireRelease(Queue.sliding<InboundRefused>(256), Queue.shutdown)
        const authorize: Authorize | undefined = options.authorize
        let handshaking = 0
        let inbound = 0
        const perIp = new Map<string, number>()

        /** Reports a refusal; cuts the socket unless a goodbye is on its way (the core then closes it). */
        const refuse = (
          socket: net.Socket,
          remote: string,
          reason: HandshakeFailure,
          detail: string,
          peer?: PeerId,
          core?: ConnectionCore
        ) =>
          Effect.gen(function* () {
            const refusal = new InboundRefused({
              remoteAddress: remote,
              reason,
              detail,
              ...(peer ? { peer } : {})
            })
            yield* Effect.logWarning("inbound connection refused").pipe(
              Effect.annotateLogs({ remote, reason, detail, ...(peer ? { peer } : {}) })
            )
            yield* Queue.offer(refusals, refusal)
            if (core?.state !== "closing") socket.destroy()
          })

        const onSocket = (raw: net.Socket) => {
          track(raw)
          const remote = remoteOf(raw)
          const ip = raw.remoteAddress ?? "unknown"
          const ipCount = perIp.get(ip) ?? 0
          if (handshaking >= config.maxConcurrentHandshakes) {
            return run(
              refuse(
                raw,
                remote,
                "over-limit",
                `${handshaking} handshakes in progress (max ${config.maxConcurrentHandshakes})`
              )
            )
          }
          if (inbound >= config.maxInboundConnections) {
            return run(
              refuse(
                raw,
                remote,
                "over-limit",
                `${inbound} inbound connections (max ${config.maxInboundConnections})`
              )
            )
          }
          if (ipCount >= config.maxConnectionsPerIp) {
            return run(
              refuse(
                raw,
                remote,
                "over-limit",
                `${ipCount} connections from ${ip} (max ${config.maxConnectionsPerIp})`
              )
            )
          }
          perIp.set(ip, ipCount + 1)
          raw.once("close", () => {
            const n = (perIp.get(ip) ?? 1) - 1
            if (n <= 0) perIp.delete(ip)
            else perIp.set(ip, n)
          })
          handshaking++
          let core: ConnectionCore | undefined
          run(
            Effect.gen(function* () {
              const accepted = yield* flavor.accept(raw)
              if (accepted.socket !== raw) track(accepted.socket)
              core = open(socketPipe(accepted.socket, remote), "inbound")
              yield* Handshake.run(core, {
                ...handshakeOptions("listener"),
                authorize,
                pinnedPeer: accepted.pinnedPeer
              })
              return core
            }).pipe(
              Effect.timeoutFail({ duration: config.handshakeTimeout, onTimeout: () => timeoutFailure }),
              Effect.ensuring(Effect.sync(() => handshaking--)),
              Effect.matchEffect({
                onFailure: (e) => refuse(raw, remote, e.reason, e.detail, e.peer, core),
                onSuccess: (core) => {
                  inbound++
                  core.onClosed(() => inbound--)
                  return Queue.offer(connections, makeConnection(core))
                }
              }),
              Effect.onInterrupt(() => Effect.sync(() => raw.destroy()))
            )
          )
        }

        const server = net.createServer({ noDelay: true }, onSocket)
        server.on("error", () => {}) // reported through listen's own failure below, or per socket
        yield* Effect.acquireRelease(
          Effect.async<void, ListenError>((resume) => {
            const onError = (error: Error) =>
              resume(Effect.fail(new ListenError({ address, detail: error.message })))
            server.once("error", onError)
            server.listen({ host: parsed.host, port: parsed.port, exclusive: true }, () => {
              server.off("error", onError)
              resume(Effect.void)
            })
          }),
          // Stop accepting; don't wait for accepted connections, which outlive the listener.
          () => Effect.sync(() => server.close())
        )
        const bound = server.address() as net.AddressInfo
        return {
          address: formatAddress(bound.address, bound.port),
          connections: Stream.fromQueue(connections, { maxChunkSize: 1 }),
          refusals: Stream.fromQueue(refusals, { maxChunkSize: 1 }),
          close: Effect.sync(() => {
            if (server.listening) server.close()
          })
        } satisfies Listener
      }).pipe(Effect.withSpan("Transport.listen", { attributes: { address, transport: flavor.kind } }))

    return { localPeer: identity.peerId, listen, dial } satisfies TransportShape
  })
