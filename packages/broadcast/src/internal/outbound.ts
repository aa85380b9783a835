// Outbound: encoding a message for its channel, sealing an envelope once per broadcast, the direct
// fan-out (one queue per peer, never waiting on any), and point-to-point `send` (bare on the hot
// path, with a trace prefix when tracing, to this node itself through the loopback).
import type { PeerManager } from "@hotstuff2/peers"
import { TransportError } from "@hotstuff2/transport"
import { Codec, Envelope, type Identity, type Message } from "@hotstuff2/wire"
import type * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import type * as Scope from "effect/Scope"
import {
  AcksUnreachable,
  type BroadcastReceipt,
  type Delivery,
  InvalidOutbound,
  type Reliable,
  type SendError,
  type SendFunction,
  type SendOptions
} from "../Broadcaster.js"
import { channelOf, internalOnly, invalid, isPointToPointOnly, pointToPointOnly } from "./channels.js"
import { type Core, charge } from "./core.js"
import * as Payload from "./payload.js"
import type { ReliableSender } from "./reliable/sender.js"
import { currentTrace, withSpan } from "./spans.js"

type PeerId = Identity.PeerId

/** The encoding of `message` (behind `prefix` when given), or why it cannot be encoded. */
const encodeOnly = (
  message: Message.Message,
  prefix: Uint8Array | undefined
): Uint8Array | InvalidOutbound => {
  const encoded = prefix === undefined ? Codec.encode(message) : Codec.encodeAfter(prefix, message)
  return Either.isRight(encoded) ? encoded.right : invalid(message, encoded.left)
}

/** A message's encoding and the channel it travels on. */
export interface Encoded {
  readonly bytes: Uint8Array
  readonly channel: number
}

/** The message's channel and its encoding, behind `prefix` when given. */
export const encode = (
  message: Message.Message,
  prefix?: Uint8Array
): Either.Either<Encoded, InvalidOutbound> => {
  const channel = channelOf(message._tag)
  if (channel === undefined) return Either.left(internalOnly(message))
  const bytes = encodeOnly(message, prefix)
  return bytes instanceof InvalidOutbound ? Either.left(bytes) : Either.right({ bytes, channel })
}

/** A sealed envelope, its slot, and the channel of its message. */
export interface SealedSlot {
  readonly envelope: Envelope.Envelope
  readonly slot: Uint8Array
  readonly channel: number
}

/**
 * Seals `payload` (the message's encoding, behind a header for tree and routed slots) in an envelope
 * with this node's next sequence number, as a slot of `kind`.
 */
export const sealPayload = (
  core: Core,
  message: Message.Message,
  kind: number,
  payload: (encoded: Uint8Array) => Uint8Array,
  encoded?: Encoded
) =>
  Effect.gen(function* () {
    // Broadcast, multicast, tree, routed and reliable broadcasts are all sealed here.
    if (isPointToPointOnly(message._tag)) return yield* pointToPointOnly(message, "in an envelope")
    const { bytes, channel } = encoded ?? (yield* encode(message))
    const trace = core.tracing ? yield* currentTrace : undefined
    const sealed = yield* Envelope.seal(core.identity, {
      networkId: core.networkId,
      sequence: core.sequence++,
      payload: payload(bytes),
      trace
    }).pipe(Effect.mapError((e) => invalid(message, e)))
    return { envelope: sealed.envelope, slot: Payload.slot(kind, sealed.bytes), channel } satisfies SealedSlot
  })

const asIs = (encoded: Uint8Array) => encoded

/** Queues `slot` to each of `targets` but this node; never waits on a peer. */
export const queueTo = (
  core: Core,
  targets: ReadonlyArray<PeerId>,
  sealed: SealedSlot,
  tag: Message.MessageTag,
  /**
   * Also send, in the background, to targets not connected yet once they are (within this long):
   * under a connection budget the send above starts their dial. They stay listed in `failed`.
   */
  awaitConnection?: Duration.Duration
): Effect.Effect<Pick<BroadcastReceipt, "queued" | "failed">> =>
  Effect.gen(function* () {
    const { slot, channel } = sealed
    const queued: Array<PeerId> = []
    const failed: Array<BroadcastReceipt["failed"][number]> = []
    const batch = [slot]
    for (const peer of targets) {
      if (peer === core.self) continue
      const result = yield* Effect.either(core.manager.send(peer, channel, batch))
      if (Either.isRight(result)) {
        queued.push(peer)
        core.observer.sent?.(peer, channel, tag, slot.length)
      } else {
        failed.push({ peer, error: result.left })
        if (awaitConnection !== undefined && result.left._tag === "PeerNotConnected") {
          core.fork(sendOnceConnected(core, peer, sealed, tag, awaitConnection))
        }
      }
    }
    charge(core, queued.length * slot.length)
    return { queued, failed }
  })

/** Sends `sealed` to `peer` once its connection is up (within `wait`); nothing if it does not come. */
export const sendOnceConnected = (
  core: Core,
  peer: PeerId,
  sealed: Pick<SealedSlot, "slot" | "channel">,
  tag: Message.MessageTag | undefined,
  wait: Duration.Duration
): Effect.Effect<void> =>
  Effect.matchEffect(core.manager.send(peer, sealed.channel, [sealed.slot], { waitForConnection: wait }), {
    onFailure: () => Effect.void,
    onSuccess: () =>
      Effect.sync(() => {
        charge(core, sealed.slot.length)
        if (tag === undefined) core.observer.relayed?.(peer, sealed.channel, sealed.slot.length)
        else core.observer.sent?.(peer, sealed.channel, tag, sealed.slot.length)
      })
  })

/** The receipt of a broadcast, and its span's annotations when tracing. */
export const receipt = (
  core: Core,
  sealed: SealedSlot,
  outcome: Pick<BroadcastReceipt, "queued" | "failed" | "reliable">,
  strategy: BroadcastReceipt["strategy"]
): Effect.Effect<BroadcastReceipt> => {
  const result: BroadcastReceipt = {
    strategy,
    sequence: sealed.envelope.sequence,
    id: Envelope.id(sealed.envelope),
    queued: outcome.queued,
    failed: outcome.failed,
    ...(outcome.reliable === undefined ? {} : { reliable: outcome.reliable })
  }
  if (!core.tracing) return Effect.succeed(result)
  return Effect.as(
    Effect.annotateCurrentSpan({
      size: sealed.slot.length,
      queued: outcome.queued.length,
      failed: outcome.failed.length
    }),
    result
  )
}

/** The direct strategy: the origin queues the envelope to every target itself. */
export const direct = (
  core: Core,
  targets: ReadonlyArray<PeerId>,
  message: Message.Message,
  encoded?: Encoded
) =>
  Effect.gen(function* () {
    const sealed = yield* sealPayload(core, message, Payload.ENVELOPE, asIs, encoded)
    const outcome = yield* queueTo(core, targets, sealed, message._tag)
    return yield* receipt(core, sealed, outcome, "direct")
  })

/**
 * A reliable broadcast or multicast: sealed once, held in each target's reliable stream until that
 * target acknowledges it, sent by this node to each target itself (never through relays).
 */
export const reliableDirect = (
  core: Core,
  sender: ReliableSender,
  targets: ReadonlyArray<PeerId>,
  message: Message.Message,
  scope: Scope.Scope | undefined
) =>
  Effect.gen(function* () {
    const sealed = yield* sealPayload(core, message, Payload.ENVELOPE, asIs)
    const outcome = yield* sender.admit(targets, sealed.slot, sealed.channel, message._tag, scope)
    return yield* receipt(core, sealed, outcome, "direct")
  })

/** A message to this node itself: delivered at once, so acknowledged at once. */
const selfAcknowledged = (self: PeerId): Reliable => ({
  recipients: [self],
  acked: Effect.succeed([self]),
  awaitAcks: (quorum) =>
    quorum <= 1
      ? Effect.succeed([self])
      : Effect.fail(new AcksUnreachable({ wanted: quorum, acked: 1, reason: "too-few-recipients" })),
  cancel: Effect.void
})

/**
 * Point-to-point `send`. `loopback` hands a message to this node's own `inbound` (false when its
 * buffer is full or the broadcaster closed).
 */
export const makeSend = (
  core: Core,
  loopback: (delivery: Delivery) => boolean,
  route: (
    peer: PeerId,
    message: Message.Message,
    error: PeerManager.PeerNotConnected
  ) => Effect.Effect<void, SendError>,
  reliable: {
    readonly sender: ReliableSender
    readonly reliableOf: (message: Message.Message, asked: boolean | undefined) => boolean
  }
) => {
  const { manager, observer, self } = core

  const sendLoopback = (message: Message.Message, channel: number, size: number) =>
    Effect.suspend(() => {
      const delivery: Delivery = {
        from: self,
        origin: self,
        message,
        channel,
        sequence: undefined,
        trace: undefined,
        size
      }
      if (loopback(delivery)) return Effect.void
      const max = core.config.loopbackBuffer
      return Effect.fail(
        new TransportError.Backpressure({
          peer: self,
          channel,
          queuedFrames: max,
          queuedBytes: 0,
          maxFrames: max,
          maxBytes: 0
        })
      )
    })

  const sendTraced = (peer: PeerId, message: Message.Message, sendOptions: SendOptions | undefined) =>
    Effect.gen(function* () {
      const prefix = Payload.directPrefix(yield* currentTrace)
      const { bytes: slot, channel } = yield* encode(message, prefix)
      if (peer === self) return yield* sendLoopback(message, channel, slot.length - prefix.length + 1)
      yield* Effect.annotateCurrentSpan("size", slot.length)
      const sent = manager.send(peer, channel, [slot], sendOptions)
      yield* sendOptions?.route === true
        ? Effect.catchTag(sent, "PeerNotConnected", (e) => route(peer, message, e))
        : sent
      observer.sent?.(peer, channel, message._tag, slot.length)
    })

  // Untraced, the hot path: no generator, one Effect step, the frame queued synchronously.
  const bare = Payload.directPrefix(undefined)
  const sendBare = (
    peer: PeerId,
    message: Message.Message,
    sendOptions: SendOptions | undefined
  ): Effect.Effect<void, SendError> =>
    Effect.suspend((): Effect.Effect<void, SendError> => {
      const channel = channelOf(message._tag)
      if (channel === undefined) return Effect.fail(internalOnly(message))
      // Checked now, written into the frame when the connection builds it: no buffer of its own.
      const encoded = Codec.encodeLater(bare, message)
      if (Either.isLeft(encoded)) return Effect.fail(invalid(message, encoded.left))
      const slot = encoded.right
      if (peer === self) return sendLoopback(message, channel, slot.length)
      const error = manager.unsafeSend(peer, channel, [slot])
      if (error === undefined) {
        observer.sent?.(peer, channel, message._tag, slot.length)
        return Effect.void
      }
      if (error._tag !== "PeerNotConnected") return Effect.fail(error)
      if (sendOptions?.waitForConnection === undefined) {
        return sendOptions?.route === true ? route(peer, message, error) : Effect.fail(error)
      }
      const waited = Effect.map(manager.send(peer, channel, [slot], sendOptions), () => {
        observer.sent?.(peer, channel, message._tag, slot.length)
      })
      return sendOptions.route === true
        ? Effect.catchTag(waited, "PeerNotConnected", (e) => route(peer, message, e))
        : waited
    })

  /**
   * A reliable send: held in the peer's reliable stream (sent now, or once the peer connects) until
   * acknowledged; a full buffer fails at once.
   */
  const sendReliable = (peer: PeerId, message: Message.Message, sendOptions: SendOptions | undefined) =>
    Effect.gen(function* () {
      if (isPointToPointOnly(message._tag)) return yield* pointToPointOnly(message, "reliable")
      const prefix = Payload.directPrefix(core.tracing ? yield* currentTrace : undefined)
      const { bytes: slot, channel } = yield* encode(message, prefix)
      if (peer === self) {
        yield* sendLoopback(message, channel, slot.length - prefix.length + 1)
        return selfAcknowledged(self)
      }
      const admitted = yield* reliable.sender.admit([peer], slot, channel, message._tag, sendOptions?.scope)
      const refused = admitted.failed[0]
      if (refused !== undefined) return yield* Effect.fail(refused.error)
      return admitted.reliable
    })

  const send = ((peer: PeerId, message: Message.Message, sendOptions?: SendOptions) => {
    if (reliable.reliableOf(message, sendOptions?.reliable)) {
      const sent = core.tracing
        ? withSpan(true, "Broadcaster.send", message, { peer }, sendReliable(peer, message, sendOptions))
        : sendReliable(peer, message, sendOptions)
      return sendOptions?.reliable === true ? sent : Effect.asVoid(sent)
    }
    return core.tracing
      ? withSpan(true, "Broadcaster.send", message, { peer }, sendTraced(peer, message, sendOptions))
      : sendBare(peer, message, sendOptions)
  }) as SendFunction

  return send
}
