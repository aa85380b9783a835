// The Transport, whatever carries the bytes: listen with admission limits, dial, the handshake,
// refusals, timers on Effect's Clock, and a scope that closes everything. A `Backend` says how bytes
// move (sockets with TLS or plain TCP, or the simulated network) and proves keys where it can (TLS).
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
  describeExpected,
  type Expected,
  type Listener,
  type ListenOptions,
  type PeerId,
  parseAddress,
  type TransportShape
} from "../Transport.js"
import { reservedHandshakesOf, type TransportConfig } from "../TransportConfig.js"
import { DialError, type HandshakeFailure, InboundRefused, ListenError } from "../TransportError.js"
import { Budget } from "./budget.js"
import { ConnectionCore } from "./connection.js"
import { makeConnection, shutdownCore } from "./connectionApi.js"
import * as Handshake from "./handshake.js"
import type { Pipe } from "./pipe.js"
import { refusalLog } from "./refusalLog.js"
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
  /**
   * `accept` as callbacks, for backends that can (sockets): no fiber per attempt. Calls `done` once
   * unless cancelled; the cancel cuts what the attempt opened.
   */
  readonly acceptNow?: (done: (result: Accepted | Handshake.HandshakeError) => void) => () => void
  /** Cuts the attempt at once. */
  readonly destroy: () => void
}

/** What `accept` gives: the byte stream, and the key a certificate proved. */
export interface Accepted {
  readonly pipe: Pipe
  readonly pinnedPeer?: PeerId
}

/** What `connect` gives: the byte stream, the key a certificate proved, and how to cut it. */
export interface Connected {
  readonly pipe: Pipe
  readonly pinnedPeer?: PeerId
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
    expected: Expected
  ) => Effect.Effect<
    { readonly pipe: Pipe; readonly pinnedPeer?: PeerId; readonly destroy: () => void },
    Handshake.HandshakeError
  >
  /**
   * `connect` as callbacks, for backends that can (sockets): the dial then runs in the caller's
   * fiber with no fiber of its own. Calls `done` once unless cancelled; the cancel cuts the attempt.
   */
  readonly connectNow?: (
    address: string,
    expected: Expected,
    done: (result: Connected | Handshake.HandshakeError) => void
  ) => () => void
  /** Cuts whatever the backend still holds, at shutdown after connections had their goodbye. */
  readonly shutdown: Effect.Effect<void>
}

export const make = (
  identity: Identity.Identity,
  config: TransportConfig,
  backend: Backend
): Effect.Effect<TransportShape, never, Scope.Scope> =>
  Effect.gen(function* () {
    // Interruptible fibers even when built in an uninterruptible region (see timers.ts).
    const run = yield* Effect.interruptible(FiberSet.makeRuntime<never>())
    const timers = yield* Timers.make
    const replay = new Handshake.ReplayCache()
    const budget = new Budget(config.maxBufferedInboundBytes, config.maxQueuedOutboundBytes)
    const live = new Set<ConnectionCore>()

    const handshakeOptions = (role: "dialer" | "listener") => ({
      identity,
      networkId: config.networkId,
      role,
      signatures: backend.signatures,
      maxClockSkew: config.maxClockSkew,
      replay
    })

    /** Logged once per connection (`stats().changedAfterSend` counts them all): an application bug. */
    const warnedOfChange = new WeakSet<ConnectionCore>()
    const onChanged = (core: ConnectionCore, channel: number) => {
      if (warnedOfChange.has(core)) return
      warnedOfChange.add(core)
      run(
        Effect.logError(
          "a message changed after send checked it: left out of its frame, not sent (messages must not be modified once sent)"
        ).pipe(Effect.annotateLogs({ peer: core.remotePeer, channel }))
      )
    }

    const open = (pipe: Pipe, direction: "inbound" | "outbound") => {
      const core = new ConnectionCore(pipe, {
        config,
        localPeer: identity.peerId,
        remoteAddress: pipe.remoteAddress,
        direction,
        timers,
        budget,
        onChanged
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

    const clock = yield* Effect.clock
    const now = () => clock.unsafeCurrentTimeMillis()
    /** Admission runs as a fiber of this transport; its outcome comes back as a callback. */
    const runAuthorize: Handshake.RunAuthorize = (effect, done) => {
      const fiber = run(effect)
      fiber.addObserver(done)
      return () => {
        fiber.unsafeInterruptAsFork(FiberId.none)
      }
    }
    /** Handshakes set up as callbacks, cut when the transport closes (after connections had their goodbye). */
    const settingUp = new Set<() => void>()
    yield* Effect.addFinalizer(() =>
      Effect.sync(() => {
        for (const abort of settingUp) abort()
      })
    )

    const dialFailure = (address: string, expected: Expected, e: Handshake.HandshakeError) =>
      new DialError({ address, expectedPeer: describeExpected(expected), reason: e.reason, detail: e.detail })

    /**
     * Connect, TLS and the handshake as callbacks under one `Effect.async`, bounded by one timer: a
     * dial costs the caller's fiber a single suspension.
     */
    const dialNow = (
      connectNow: NonNullable<Backend["connectNow"]>,
      address: string,
      expected: Expected
    ): Effect.Effect<Connection, DialError> =>
      Effect.async<Connection, DialError>((resume) => {
        let finished = false
        let cancelConnect: (() => void) | undefined
        let cancelHandshake: (() => void) | undefined
        let destroy: (() => void) | undefined
        let core: ConnectionCore | undefined
        const fail = (e: Handshake.HandshakeError) => {
          if (finished) return
          finished = true
          cancelTimer()
          cancelConnect?.()
          cancelHandshake?.()
          // Cut the stream, unless a goodbye telling the listener why is still being flushed.
          if (core?.state !== "closing") destroy?.()
          resume(Effect.fail(dialFailure(address, expected, e)))
        }
        const cancelTimer = timers(handshakeMillis, () => fail(timeoutFailure))
        cancelConnect = connectNow(address, expected, (connected) => {
          cancelConnect = undefined
          if (finished) {
            if (!(connected instanceof Handshake.HandshakeError)) connected.destroy()
            return
          }
          if (connected instanceof Handshake.HandshakeError) return fail(connected)
          destroy = connected.destroy
          const opened = open(connected.pipe, "outbound")
          core = opened
          cancelHandshake = Handshake.start(
            opened,
            { ...handshakeOptions("dialer"), expected, pinnedPeer: connected.pinnedPeer },
            now,
            runAuthorize,
            (result) => {
              cancelHandshake = undefined
              if (result instanceof Handshake.HandshakeError) return fail(result)
              if (finished) return
              finished = true
              cancelTimer()
              resume(Effect.succeed(makeConnection(opened)))
            }
          )
        })
        return Effect.sync(() => {
          if (finished) return
          finished = true
          cancelTimer()
          cancelConnect?.()
          cancelHandshake?.()
          if (core?.state !== "closing") destroy?.()
        })
      })

    const dialEffect = (address: string, expected: Expected): Effect.Effect<Connection, DialError> => {
      let destroy: (() => void) | undefined
      let core: ConnectionCore | undefined
      return Effect.gen(function* () {
        const connected = yield* backend.connect(address, expected)
        destroy = connected.destroy
        core = open(connected.pipe, "outbound")
        yield* Handshake.run(core, {
          ...handshakeOptions("dialer"),
          expected,
          pinnedPeer: connected.pinnedPeer
        })
        return makeConnection(core)
      }).pipe(
        Timers.deadline(timers, handshakeMillis, () => timeoutFailure),
        // On failure cut the stream, unless a goodbye telling the listener why is still being flushed.
        Effect.onExit((exit) =>
          Effect.sync(() => Exit.isSuccess(exit) || core?.state === "closing" || destroy?.())
        ),
        Effect.mapError((e) => dialFailure(address, expected, e))
      )
    }

    const dial = (address: string, expected: Expected): Effect.Effect<Connection, DialError> =>
      (backend.connectNow !== undefined
        ? dialNow(backend.connectNow, address, expected)
        : dialEffect(address, expected)
      ).pipe(
        // No stack trace: capturing one costs more than the rest of the span.
        Effect.withSpan("Transport.dial", {
          attributes: { address, peer: describeExpected(expected), transport: backend.kind },
          captureStackTrace: false
        })
      )

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
        const reservedFor = options.reserved
        // Without a `reserved` option no host may use reserved slots: then none are kept.
        const reservedSlots = reservedFor === undefined ? 0 : reservedHandshakesOf(config)
        const refused: { [reason in HandshakeFailure]?: number } = {}
        const log = refusalLog(config, now, timers, run)
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
            refused[reason] = (refused[reason] ?? 0) + 1
            const refusal = new InboundRefused({
              remoteAddress: attempt.remoteAddress,
              reason,
              detail,
              ...(peer ? { peer } : {})
            })
            yield* log(refusal)
            yield* Queue.offer(refusals, refusal)
          }).pipe(
            // Cut even when the offer is interrupted (the listener's queue shut down with its scope).
            Effect.ensuring(Effect.sync(() => core?.state !== "closing" && attempt.destroy()))
          )

        /** Whether the attempt may use the reserved handshake slots: its IP is one the listener names. */
        const isReserved = (attempt: InboundAttempt): boolean => {
          if (reservedFor === undefined) return false
          const host = parseAddress(attempt.remoteAddress)?.host
          return host !== undefined && reservedFor(host.replace(/^::ffff:/i, ""))
        }

        const overLimit = (reserved: boolean): string | undefined => {
          // The last `reservedSlots` handshake slots are only for hosts the listener reserves them for.
          const handshakeLimit = config.maxConcurrentHandshakes - (reserved ? 0 : reservedSlots)
          if (handshaking >= handshakeLimit) {
            return reserved || reservedSlots === 0
              ? `${handshaking} handshakes in progress (max ${handshakeLimit})`
              : `${handshaking} handshakes in progress (max ${handshakeLimit} from hosts other than validators', ${reservedSlots} more kept for theirs)`
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
            overLimit(isReserved(attempt)) ??
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
          const failed = (e: Handshake.HandshakeError, core: ConnectionCore | undefined) => {
            // A refused connection still flushing its goodbye holds its place until it closes.
            if (core?.state === "closing") core.onClosed(() => release(host))
            else release(host)
            return refuse(attempt, e.reason, e.detail, e.peer, core)
          }
          /**
           * The authenticated connection, counted, or undefined when `maxInboundConnections` filled
           * up while its handshake ran (handshakes run side by side: the limit checked at the
           * attempt is checked again here); the peer is then told why, and the refusal reported.
           */
          const accepted = (core: ConnectionCore): Connection | undefined => {
            if (inbound >= config.maxInboundConnections) {
              const detail = `${inbound} inbound connections (max ${config.maxInboundConnections})`
              core.close("over-limit", detail, Handshake.encodeGoodbye("over-limit", detail))
              core.onClosed(() => release(host))
              run(refuse(attempt, "over-limit", detail, core.remotePeer, core))
              return undefined
            }
            inbound++
            core.onClosed(() => {
              inbound--
              release(host)
            })
            return makeConnection(core)
          }
          if (attempt.acceptNow !== undefined) {
            acceptNow(attempt.acceptNow)
            return
          }
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
                onFailure: (e) => failed(e, core),
                onSuccess: (core) => {
                  const connection = accepted(core)
                  return connection === undefined ? Effect.void : Queue.offer(connections, connection)
                }
              }),
              Effect.onInterrupt(() => Effect.sync(() => attempt.destroy()))
            )
          )

          /** TLS and the handshake as callbacks, bounded by one timer: no fiber per attempt. */
          function acceptNow(start: NonNullable<InboundAttempt["acceptNow"]>) {
            let finished = false
            let core: ConnectionCore | undefined
            let cancelAccept: (() => void) | undefined
            let cancelHandshake: (() => void) | undefined
            const finish = () => {
              finished = true
              cancelTimer()
              handshaking--
              settingUp.delete(abort)
              cancelAccept?.()
              cancelHandshake?.()
            }
            const fail = (e: Handshake.HandshakeError) => {
              if (finished) return
              finish()
              run(failed(e, core))
            }
            // The transport is closing: cut the attempt, as an interrupted handshake fiber would.
            const abort = () => {
              if (finished) return
              finish()
              attempt.destroy()
            }
            settingUp.add(abort)
            const cancelTimer = timers(handshakeMillis, () => fail(timeoutFailure))
            cancelAccept = start((result) => {
              cancelAccept = undefined
              if (finished) return
              if (result instanceof Handshake.HandshakeError) return fail(result)
              const opened = open(result.pipe, "inbound")
              core = opened
              cancelHandshake = Handshake.start(
                opened,
                { ...handshakeOptions("listener"), authorize, pinnedPeer: result.pinnedPeer },
                now,
                runAuthorize,
                (outcome) => {
                  cancelHandshake = undefined
                  if (outcome instanceof Handshake.HandshakeError) return fail(outcome)
                  if (finished) return
                  finish()
                  const connection = accepted(opened)
                  if (connection !== undefined && !Queue.unsafeOffer(connections, connection))
                    attempt.destroy()
                }
              )
            })
          }
        }

        const bound = yield* backend.listen(address, onInbound)
        return {
          address: bound.address,
          connections: Stream.fromQueue(connections, { maxChunkSize: 1 }),
          refusals: Stream.fromQueue(refusals, { maxChunkSize: 1 }),
          refused: Effect.sync(() => ({ ...refused })),
          close: bound.close
        } satisfies Listener
      }).pipe(Effect.withSpan("Transport.listen", { attributes: { address, transport: backend.kind } }))

    return { localPeer: identity.peerId, listen, dial } satisfies TransportShape
  })
