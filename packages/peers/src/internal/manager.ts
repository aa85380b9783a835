// PeerManager's core: it registers connections (one per peer, the tie-break), takes them out of
// service, admits and bans, sends, and wires the jobs that live in their own modules: the peer's
// slot (slot.ts), dialling (dialer.ts), heartbeats (heartbeat.ts), inbound rate limits
// (rateLimit.ts), reading (reader.ts), the inbox (inbox.ts), the validators' reserved handshake
// hosts (reservedHosts.ts) and the connection budget (budget.ts).
//
// Fibers, because a 64-node mesh in one process pays for each: one reader per connection (it also
// notices the close), and one dialer per peer only while the peer is disconnected. A connection that
// arrives while the dialer waits (backoff, grace, a dial permit) ends the dialer; one that arrives
// while it dials lets the dial finish, and the tie-break keeps one of the two.
import { Transport, type TransportError } from "@hotstuff2/transport"
import type { Frame } from "@hotstuff2/wire"
import * as Chunk from "effect/Chunk"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as FiberSet from "effect/FiberSet"
import * as Option from "effect/Option"
import type * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import {
  type PeerId,
  type PeerManagerOptions,
  type PeerManagerShape,
  PeerNotConnected,
  type Validator
} from "../PeerManager.js"
import { PeerRegistry } from "../PeerRegistry.js"
import * as PeersConfig from "../PeersConfig.js"
import { type Budget, makeBudget } from "./budget.js"
import { type Dialer, makeDialer } from "./dialer.js"
import { HEARTBEAT, makeHeartbeat } from "./heartbeat.js"
import { FairInbox } from "./inbox.js"
import { makeRateLimiter } from "./rateLimit.js"
import { makeReader } from "./reader.js"
import { ReservedHosts } from "./reservedHosts.js"
import { addressDiscovered, makeSlot, type Slot, setConnection } from "./slot.js"

/** Which of two connections between the same peers both sides keep: the one the smaller PeerId dialled. */
const preferred = (local: PeerId, connection: Transport.Connection): boolean => {
  const dialer = connection.direction === "outbound" ? local : connection.remotePeer
  return dialer === (local < connection.remotePeer ? local : connection.remotePeer)
}

export const make = (options: PeerManagerOptions) =>
  Effect.gen(function* () {
    const config = yield* PeersConfig.decode(options.config ?? {})
    const transport = yield* Transport.Transport
    const registry = yield* PeerRegistry
    const clock = yield* Effect.clock
    const now = () => Number(clock.unsafeCurrentTimeNanos()) / 1e6
    const local = options.identity.peerId
    // The validator set (this node left out): one mutable set, owned here and read by every job
    // through this one reference.
    const validators = new Set(options.validators.map((v) => v.id).filter((id) => id !== local))
    const slots = new Map<PeerId, Slot>()
    const reservedHosts = new ReservedHosts(validators, options.validators)
    /** Peers `connectTo`'d: admitted and kept whatever the validator set says, until `disconnect`. */
    const invited = new Set<PeerId>()
    const separate = new Map(
      (options.separateChannels ?? []).map((channel) => [
        channel,
        new FairInbox(config.inboundFramesPerPeer, config.inboundBytesPerPeer, config.inboundBytesTotal)
      ])
    )
    const separateDropped = new Map<number, number>()
    const diverted =
      options.divert === undefined
        ? undefined
        : {
            channel: options.divert.channel,
            select: options.divert.select,
            inbox: new FairInbox(
              config.inboundFramesPerPeer,
              config.inboundBytesPerPeer,
              config.inboundBytesTotal
            )
          }
    const inbox = new FairInbox(
      config.inboundFramesPerPeer,
      config.inboundBytesPerPeer,
      config.inboundBytesTotal
    )
    yield* Effect.addFinalizer(() =>
      Effect.sync(() => {
        inbox.close()
        for (const side of separate.values()) side.close()
        diverted?.inbox.close()
      })
    )
    const perConnection = yield* FiberSet.make<void, never>()

    const slotOf = (peer: PeerId): Slot => {
      let slot = slots.get(peer)
      if (slot === undefined) {
        slot = makeSlot(now())
        slots.set(peer, slot)
      }
      return slot
    }

    // Its finalizers run before `perConnection`'s (in reverse): the dialers stop, then the readers.
    const dialer: Dialer = yield* makeDialer({
      config,
      transport,
      registry,
      local,
      validators,
      keeps: (peer) => budget.keeps(peer),
      budgeted: () => budget.budgeted(),
      now,
      slotOf,
      register: (connection) => register(connection)
    })
    const limiter = makeRateLimiter(config, now)
    // Before the listener: a connection may close (and ask who is dialled) from then on.
    const budget: Budget = yield* makeBudget({
      config,
      local,
      validators,
      slots,
      slotOf,
      invited,
      now,
      dialer: () => dialer,
      disconnect: (peer, reason, detail) => disconnect(peer, reason, detail)
    })

    /**
     * A slot is forgotten once nothing uses it: no dialer (peers that come and go), no connection, no
     * `send`. A validator's is kept (budget mode dials few of them): its buckets outlive reconnects.
     */
    const forgetIfIdle = (peer: PeerId, slot: Slot) => {
      if (
        !validators.has(peer) &&
        !dialer.dials(peer) &&
        slot.connection === undefined &&
        slot.waiting === 0 &&
        slots.get(peer) === slot
      ) {
        slots.delete(peer)
        inbox.forget(peer)
        for (const side of separate.values()) side.forget(peer)
        diverted?.inbox.forget(peer)
      }
    }

    /**
     * Takes a connection out of its slot now (redial starts, sends fail typed) and closes it in the
     * background: a close in progress is never counted or reported twice.
     */
    const detach = (
      peer: PeerId,
      slot: Slot,
      connection: Transport.Connection,
      reason: string,
      detail: string
    ) =>
      Effect.gen(function* () {
        if (slot.connection === connection) {
          const connectedAt = slot.connectedAt
          setConnection(slot, undefined, now())
          yield* registry.setConnection(peer, "disconnected", { reason: `local: ${reason}` })
          yield* dialer.startDialer(peer, slot, connectedAt)
        }
        yield* Effect.forkDaemon(connection.close({ reason, detail }))
      })

    /** The peer's connection closed: out of its slot, and the dialer starts (after a backoff if it was short). */
    const onClosed = (
      peer: PeerId,
      slot: Slot,
      connection: Transport.Connection,
      why: Transport.CloseReason
    ) =>
      Effect.gen(function* () {
        const violation = why.initiator === "local" && why.reason === "protocol-error"
        if (slot.connection === connection) {
          const connectedAt = slot.connectedAt
          setConnection(slot, undefined, now())
          yield* registry.setConnection(peer, "disconnected", {
            reason: `${why.initiator}: ${why.reason}${violation ? `: ${why.detail}` : ""}`
          })
          yield* dialer.startDialer(peer, slot, connectedAt)
        }
        // Bytes that break the protocol (a huge length prefix, a frame that does not decode, a frame
        // on an unknown channel) cost the peer, as an invalid message does: reconnecting and
        // repeating escalates to a ban.
        if (violation) yield* registry.report(peer, "ProtocolViolation", why.detail)
        forgetIfIdle(peer, slot)
      })

    yield* registry.setValidators([...validators])
    for (const v of options.validators) {
      if (v.id === local) continue
      for (const address of v.addresses) yield* registry.addAddress(v.id, address, "config")
    }

    const admitted = (peer: PeerId) =>
      Effect.map(
        registry.isBanned(peer),
        (banned) => !banned && (validators.has(peer) || invited.has(peer) || config.admitNonValidators)
      )

    // Replaced by `unsafeOnAck` (the broadcaster, built over this manager, registers itself).
    let onAck = options.onAck
    const heartbeat = makeHeartbeat({ config, registry, now, slots, onAck: () => onAck, detach })
    const reader = makeReader({
      config,
      registry,
      now,
      inbox,
      separate,
      separateDropped,
      divert: diverted,
      limiter,
      heartbeat,
      onClosed
    })

    /** Makes `connection` the peer's one connection, or closes it as a duplicate. */
    const register = (connection: Transport.Connection): Effect.Effect<void> =>
      Effect.gen(function* () {
        const peer = connection.remotePeer
        if (!(yield* admitted(peer))) {
          yield* Effect.forkDaemon(
            connection.close({ reason: "not-admitted", detail: "banned or not a validator" })
          )
          return
        }
        const slot = slotOf(peer)
        const existing = slot.connection
        if (existing !== undefined) {
          // Both sides keep the connection the smaller PeerId dialled; between two of the same kind, the newer.
          const keepNew = preferred(local, connection) || !preferred(local, existing)
          const loser = keepNew ? existing : connection
          yield* Effect.forkDaemon(
            loser.close({ reason: "duplicate", detail: "another connection to this peer is kept" })
          )
          if (!keepNew) return
        }
        setConnection(slot, connection, now())
        reservedHosts.learn(peer, connection.remoteAddress)
        yield* registry.setConnection(peer, "connected", {
          address: connection.remoteAddress,
          direction: connection.direction
        })
        yield* dialer.connected(peer, slot)
        connection.unsafeAdmitCompressed(limiter.admitCompressedFor(slot))
        const receive = reader.receiverFor(peer, slot, connection)
        // Long-lived fibers are interruptible even when the manager is built in an uninterruptible
        // region (an acquireRelease acquire): closing its scope must stop them.
        yield* FiberSet.run(
          perConnection,
          // The fast path lives as long as the reader: once it is gone (closed, replaced, the manager
          // shutting down), frames wait in the connection, and its socket pauses, rather than going
          // to an inbox nobody drains.
          Effect.suspend(() => {
            // Application data marks the connection used (for the budget); heartbeats do not. A frame
            // queued behind one the receiver declined is not seen here, but that first one was.
            connection.unsafeReceive((frame) => {
              if (frame.channel !== HEARTBEAT) slot.used = true
              return receive(frame)
            })
            return Effect.interruptible(reader.read(peer, slot, connection))
          }).pipe(Effect.ensuring(Effect.sync(() => connection.unsafeReceive(undefined))))
        )
      })

    // Listen, admitting validators (and non-validators if configured) that are not banned, and
    // keeping handshake slots for validators' hosts.
    const listener = yield* transport.listen(options.listen, {
      authorize: (peer) => admitted(peer),
      reserved: (host) => reservedHosts.has(host)
    })
    yield* listener.connections.pipe(
      Stream.runForEach((connection) => register(connection)),
      Effect.interruptible,
      Effect.forkScoped
    )
    // A refusal of a proven key goes to the registry, which tells of repeated refusals of a peer it
    // knows (`Refused`); the counts by reason are the listener's (`refused`).
    yield* listener.refusals.pipe(
      Stream.runForEach((refusal) =>
        refusal.peer === undefined
          ? Effect.void
          : registry.refused(refusal.peer as PeerId, refusal.reason, refusal.detail)
      ),
      Effect.interruptible,
      Effect.forkScoped
    )

    // A ban closes the banned peer's connection; a discovered address wakes a dialer that had none.
    yield* registry.changes.pipe(
      Stream.runForEach((event) =>
        Effect.suspend(() => {
          if (event._tag === "Discovered") {
            const slot = slots.get(event.peer)
            if (slot !== undefined) addressDiscovered(slot)
            return Effect.void
          }
          if (event._tag !== "Banned") return Effect.void
          const slot = slots.get(event.peer)
          const connection = slot?.connection
          return slot === undefined || connection === undefined
            ? Effect.void
            : detach(event.peer, slot, connection, "banned", event.reason)
        })
      ),
      Effect.interruptible,
      Effect.forkScoped
    )

    // One ticker for every connection's heartbeat: one Clock sleep per node, not per connection.
    yield* Effect.forkScoped(heartbeat.ticker)

    yield* dialer.startAll

    /** Queues on `connection`, or on the peer's current one if `connection` lost a duplicate tie-break since. */
    const sendOn = (
      peer: PeerId,
      connection: Transport.Connection,
      channel: number,
      messages: ReadonlyArray<Frame.Outbound>
    ) => {
      const error = connection.unsafeSend(channel, messages)
      if (error?._tag !== "ConnectionClosed") return error
      const current = slots.get(peer)?.connection
      return current !== undefined && current !== connection ? current.unsafeSend(channel, messages) : error
    }

    /** A send found the peer not connected: in budget mode, dials it on demand for the next send. */
    const notConnected = (peer: PeerId) => {
      budget.demand(peer)
      return new PeerNotConnected({ peer, detail: "not connected (pass waitForConnection to wait)" })
    }

    /** Closes the peer's connection (a validator's dialer takes over); its slot goes once idle. */
    const disconnect = (peer: PeerId, reason: string, detail: string) =>
      Effect.suspend(() => {
        const slot = slots.get(peer)
        const connection = slot?.connection
        if (slot === undefined || connection === undefined) return Effect.void
        return Effect.zipRight(
          detach(peer, slot, connection, reason, detail),
          Effect.sync(() => forgetIfIdle(peer, slot))
        )
      })

    const setValidators = (next: ReadonlyArray<Validator>) =>
      Effect.gen(function* () {
        const ids = new Set(next.map((v) => v.id).filter((id) => id !== local))
        const wasBudgeted = budget.budgeted()
        const left = [...validators].filter((id) => !ids.has(id))
        const joined = [...ids].filter((id) => !validators.has(id))
        validators.clear()
        for (const id of ids) validators.add(id)
        reservedHosts.addConfigured(next)
        yield* registry.setValidators([...validators])
        for (const v of next) {
          if (v.id === local) continue
          for (const address of v.addresses) yield* registry.addAddress(v.id, address, "config")
        }
        yield* dialer.validatorsChanged
        yield* budget.validatorsChanged
        for (const peer of left) {
          invited.delete(peer)
          if (!config.admitNonValidators) {
            yield* disconnect(peer, "not-a-validator", "left the validator set")
          }
        }
        // Out of budget mode, every validator is dialled again; in it, newcomers only if wanted.
        const dialled = wasBudgeted && !budget.budgeted() ? [...validators] : joined
        for (const peer of dialled.sort()) {
          if (dialer.dials(peer)) yield* dialer.startDialer(peer, slotOf(peer), undefined)
        }
      })

    const connectTo = (address: string, expected: Transport.Expected) =>
      Effect.gen(function* () {
        const connection = yield* transport.dial(address, expected)
        const peer = connection.remotePeer
        // A validator is kept because it is one (and dropped when it leaves the set); only a peer
        // outside the set is kept because it was asked for.
        if (!validators.has(peer)) invited.add(peer)
        yield* register(connection)
        const slot = slots.get(peer)
        if (slot?.connection === undefined) {
          invited.delete(peer)
          return yield* new PeerNotConnected({ peer, detail: "dialled, but not admitted (banned?)" })
        }
        return peer
      })

    return {
      localPeer: local,
      address: listener.address,
      unsafeSend: (peer, channel, messages) => {
        const slot = slots.get(peer)
        if (slot?.connection === undefined) return notConnected(peer)
        slot.used = true
        return sendOn(peer, slot.connection, channel, messages)
      },
      send: (peer, channel, messages, sendOptions) =>
        Effect.suspend(() => {
          const slot = slots.get(peer)
          if (slot?.connection !== undefined) {
            slot.used = true
            const error = sendOn(peer, slot.connection, channel, messages)
            return error === undefined ? Effect.void : Effect.fail(error)
          }
          if (sendOptions?.waitForConnection === undefined) return Effect.fail(notConnected(peer))
          const target = slotOf(peer)
          target.waiting++
          budget.demand(peer)
          return Effect.gen(function* () {
            while (target.connection === undefined) yield* Deferred.await(target.changed)
            return target.connection
          }).pipe(
            Effect.timeoutFail({
              duration: sendOptions.waitForConnection,
              onTimeout: () => new PeerNotConnected({ peer, detail: "no connection within the wait" })
            }),
            Effect.ensuring(
              Effect.sync(() => {
                target.waiting--
                forgetIfIdle(peer, target)
              })
            ),
            Effect.flatMap((connected) => {
              target.used = true
              const error = sendOn(peer, connected, channel, messages)
              return error === undefined ? Effect.void : Effect.fail(error)
            })
          )
        }),
      inbound: Stream.repeatEffectChunk(Effect.map(inbox.take(256), Chunk.unsafeFromArray)),
      unsafePoll: (max) => inbox.poll(max),
      unsafeOnInbound: (listener) => inbox.onReady(listener),
      unsafeOnAck: (handler) => {
        onAck = handler
      },
      connected: Effect.sync(() =>
        [...slots].filter(([, s]) => s.connection !== undefined).map(([peer]) => peer)
      ),
      connection: (peer) => Effect.sync(() => Option.fromNullable(slots.get(peer)?.connection)),
      events: registry.changes,
      refused: listener.refused,
      inboundOn: (channel) => {
        const side = separate.get(channel)
        return side === undefined
          ? Stream.empty
          : Stream.repeatEffectChunk(Effect.map(side.take(256), Chunk.unsafeFromArray))
      },
      inboundDiverted:
        diverted === undefined
          ? Stream.empty
          : Stream.repeatEffectChunk(Effect.map(diverted.inbox.take(256), Chunk.unsafeFromArray)),
      separateDropped: Effect.sync(() => new Map(separateDropped)),
      want: budget.want,
      trimmed: Effect.sync(budget.trimmed),
      setValidators,
      validators: Effect.sync(() => new Set(validators)),
      connectTo,
      disconnect: (peer, reason) =>
        Effect.suspend(() => {
          invited.delete(peer)
          return disconnect(peer, reason, "asked by this node")
        })
    } satisfies PeerManagerShape
  }) as Effect.Effect<
    PeerManagerShape,
    PeersConfig.InvalidPeersConfig | TransportError.ListenError,
    Scope.Scope | Transport.Transport | PeerRegistry
  >
