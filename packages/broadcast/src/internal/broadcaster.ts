// The Broadcaster's core: builds the shared state (core.ts) and wires the jobs that live in their
// own modules: outbound encoding, sealing and the direct strategy (outbound.ts), the tree strategy's
// origin and relay sides (tree/), the adaptive rule (adaptive.ts), routed sends (routing.ts),
// inbound verify and dedup (inbound.ts), the `inbound` stream and loopback (stream.ts), spans.
import { PeerManager, PeerRegistry } from "@hotstuff2/peers"
import type { Identity, Message } from "@hotstuff2/wire"
import * as Clock from "effect/Clock"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as FiberSet from "effect/FiberSet"
import * as Stream from "effect/Stream"
import * as BroadcastConfig from "../BroadcastConfig.js"
import type { BroadcasterOptions, BroadcasterShape, BroadcastOptions } from "../Broadcaster.js"
import { choose } from "./adaptive.js"
import { makeCore, recordSet } from "./core.js"
import { makeInbound } from "./inbound.js"
import { direct, encode, makeSend, reliableDirect } from "./outbound.js"
import { makeReliableReceiver } from "./reliable/receiver.js"
import { makeReliableSender } from "./reliable/sender.js"
import { makeTimer } from "./reliable/timer.js"
import { makeRouting } from "./routing.js"
import { withSpan } from "./spans.js"
import { makeStream } from "./stream.js"
import { defaultFanout } from "./tree/layout.js"
import { makeTreeOrigin, type Plan } from "./tree/origin.js"
import { makeTreeRelay } from "./tree/relay.js"

export { channelOf } from "./channels.js"

type PeerId = Identity.PeerId

/** Bytes an envelope adds to its payload, about: origin, sequence, signature, lengths. */
const ENVELOPE_OVERHEAD = 120

export const make = (options: BroadcasterOptions) =>
  Effect.gen(function* () {
    const config = yield* BroadcastConfig.decode(options.config ?? {})
    const clock = yield* Effect.clock
    // Interruptible even when the layer is built in an uninterruptible region (its fibers must stop at close).
    const runFork = yield* Effect.interruptible(FiberSet.makeRuntime<never, void, never>())
    const core = makeCore({
      config,
      manager: yield* PeerManager.PeerManager,
      registry: yield* PeerRegistry.PeerRegistry,
      identity: options.identity,
      self: options.identity.peerId,
      networkId: options.networkId,
      tracing: options.tracing ?? false,
      tracer: options.tracer,
      observer: options.observer ?? {},
      admitNonValidators: options.admitNonValidators ?? false,
      validators: options.validators,
      epoch: options.epoch ?? 0n,
      now: () => clock.unsafeCurrentTimeMillis(),
      fork: (effect) => {
        runFork(effect)
      },
      // Sequence numbers start at the clock (millis << 16), so a restarted origin continues above
      // everything it sent before and receivers do not take its new envelopes for duplicates.
      sequence: BigInt(Math.floor(yield* Clock.currentTimeMillis)) << 16n
    })
    const treeOrigin = yield* makeTreeOrigin(core)
    const relay = makeTreeRelay(core)
    const routing = makeRouting(core)

    // Reliable delivery: one timer for both sides, running only while either holds something.
    const incarnation = options.incarnation ?? BigInt(Math.floor(yield* Clock.currentTimeMillis))
    let pass: (now: number) => number | undefined = () => undefined
    const timer = makeTimer(core, Math.max(1, Duration.toMillis(config.ackDelay)), (now) => pass(now))
    const sender = makeReliableSender(core, incarnation, timer.wake)
    const receiver = makeReliableReceiver(core, timer.wake)

    const { handleFrames, handleReleased } = makeInbound(core, {
      relay,
      routing,
      onReceipt: treeOrigin.onReceipt,
      reliable: receiver
    })
    const { inbound, receive, loopback, inject } = yield* makeStream({
      manager: core.manager,
      loopbackBuffer: config.loopbackBuffer,
      handleFrames,
      onPull: receiver.pulled
    })
    pass = (now) => {
      const sending = sender.tick(now)
      const { released, next } = receiver.tick(now)
      for (const { peer, held } of released) inject(handleReleased(peer, held))
      return sending === undefined ? next : next === undefined ? sending : Math.min(sending, next)
    }
    core.manager.unsafeOnAck(sender.onAck)
    // Closing waits (within drainTimeout) for acknowledgements of what is held, while the timer and
    // the connections still run: a graceful restart loses nothing.
    const drainMillis = Duration.toMillis(config.drainTimeout)
    yield* Effect.addFinalizer(() =>
      Effect.gen(function* () {
        const until = clock.unsafeCurrentTimeMillis() + drainMillis
        if (drainMillis > 0 && sender.buffer().entries > 0) sender.resendAll()
        while (sender.buffer().entries > 0 && clock.unsafeCurrentTimeMillis() < until) {
          yield* Effect.sleep(Duration.millis(Math.max(1, Duration.toMillis(config.ackDelay))))
        }
        core.manager.unsafeOnAck(undefined)
      })
    )
    // A reconnect sends again everything the peer has not acknowledged, in order.
    yield* Effect.forkScoped(
      Effect.interruptible(
        Stream.runForEach(core.registry.changes, (event) =>
          event._tag === "Connected" ? Effect.sync(() => sender.onConnected(event.peer)) : Effect.void
        )
      )
    )
    const reliableOf = (message: Message.Message, asked: boolean | undefined) =>
      asked ?? config.reliableMessages.includes(message._tag)
    const send = makeSend(core, loopback, routing.send, { sender, reliableOf })

    /** The strategy of one broadcast, and the tree it takes when it is one. */
    const strategyOf = (message: Message.Message, size: number, strategy: BroadcastConfig.Strategy) =>
      Effect.gen(function* () {
        if (strategy === "direct") return undefined
        const now = clock.unsafeCurrentTimeMillis()
        const connected = () => Effect.map(core.manager.connected, (peers) => new Set(peers))
        if (strategy === "tree") {
          return core.others.length > 0 ? treeOrigin.plan(message, now, yield* connected()) : undefined
        }
        const recipients = core.others.length
        const conditions = {
          recipients,
          size: size + ENVELOPE_OVERHEAD,
          fanout: config.fanout ?? defaultFanout(recipients + 1),
          rtt: 0,
          fallingBack: treeOrigin.fallingBack(now)
        }
        // The cheap checks first: small sets and messages never lay out a tree or read RTTs.
        if (choose(config, conditions).why !== "estimate") return undefined
        const plan = treeOrigin.plan(message, now, yield* connected())
        const rtt = yield* treeOrigin.rttOf(plan.tree)
        const choice = choose(config, { ...conditions, fanout: plan.header.fanout, rtt })
        return choice.strategy === "tree" ? plan : undefined
      })

    const broadcastNow = (message: Message.Message, options: BroadcastOptions | undefined) =>
      Effect.gen(function* () {
        if (reliableOf(message, options?.reliable)) {
          core.observer.chose?.("direct")
          return yield* reliableDirect(core, sender, core.others, message, options?.scope)
        }
        const encoded = yield* encode(message)
        const plan: Plan | undefined = yield* strategyOf(
          message,
          encoded.bytes.length,
          options?.strategy ?? config.strategy
        )
        core.observer.chose?.(plan === undefined ? "direct" : "tree")
        return plan === undefined
          ? yield* direct(core, core.others, message, encoded)
          : yield* treeOrigin.send(message, encoded, plan)
      })

    const broadcast: BroadcasterShape["broadcast"] = (message, options) =>
      withSpan(
        core.tracing,
        "Broadcaster.broadcast",
        message,
        { recipients: core.others.length },
        broadcastNow(message, options)
      )

    const multicast: BroadcasterShape["multicast"] = (peers, message, options) =>
      withSpan(
        core.tracing,
        "Broadcaster.multicast",
        message,
        { recipients: peers.length },
        reliableOf(message, options?.reliable)
          ? reliableDirect(core, sender, peers, message, options?.scope)
          : direct(core, peers, message)
      )

    const setValidators = (
      recipients: ReadonlyArray<PeerId>,
      origins: ReadonlyArray<PeerId>,
      epoch?: bigint
    ) =>
      Effect.sync(() => {
        core.others = recipients.filter((v) => v !== core.self)
        core.validators.clear()
        for (const origin of origins) core.validators.add(origin)
        for (const recipient of recipients) core.validators.add(recipient)
        core.validators.add(core.self)
        recordSet(core, epoch ?? core.epoch, recipients)
        // Reliable messages held for peers that left every tracked set are dropped (admitted
        // non-validators keep theirs).
        if (!core.admitNonValidators) sender.forgetOthers(core.validators)
      })

    return {
      self: core.self,
      broadcast,
      multicast,
      send,
      inbound,
      receive,
      setValidators,
      reliableBuffer: Effect.sync(sender.buffer)
    } satisfies BroadcasterShape
  })
