// The Broadcaster: seals outbound broadcasts once, queues them to each peer's own queues, and turns
// the manager's inbound frames into deliveries (verify, dedup) synchronously per chunk of frames:
// one Effect per chunk on the fast path, one per message only for traced messages (their spans).
// The consumer of `inbound` does that work in its own fiber, taking straight from the manager's
// inbox (no fiber or queue in between); `send` queues its frame synchronously.
import { PeerManager, PeerRegistry } from "@hotstuff2/peers"
import { TransportConfig, TransportError } from "@hotstuff2/transport"
import { Codec, Envelope, type Identity, type Message } from "@hotstuff2/wire"
import * as EffectChannel from "effect/Channel"
import * as Chunk from "effect/Chunk"
import * as Clock from "effect/Clock"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Option from "effect/Option"
import * as Stream from "effect/Stream"
import * as Tracer from "effect/Tracer"
import * as BroadcastConfig from "../BroadcastConfig.js"
import {
  type BroadcasterOptions,
  type BroadcasterShape,
  type BroadcastReceipt,
  type Delivery,
  InvalidOutbound,
  type Rejection,
  type SendError,
  type SendOptions
} from "../Broadcaster.js"
import { Dedup } from "./dedup.js"
import * as Payload from "./payload.js"

type PeerId = Identity.PeerId
type MessageTag = Message.MessageTag

const { Channel } = TransportConfig

const channels: Record<MessageTag, number | undefined> = {
  Proposal: Channel.consensus,
  Vote: Channel.consensus,
  QuorumCertificate: Channel.consensus,
  NewView: Channel.control,
  Timeout: Channel.control,
  TimeoutCertificate: Channel.control,
  AppMessage: Channel.control,
  SyncRequest: Channel.sync,
  SyncResponse: Channel.sync,
  // Internal to the peers and discovery packages.
  Ping: undefined,
  Pong: undefined,
  PeerRecord: undefined,
  PeerExchangeRequest: undefined,
  PeerExchangeResponse: undefined
}

/** The channel a message type travels on; undefined for types internal to the network layer. */
export const channelOf = (tag: MessageTag): number | undefined => channels[tag]

const hex = (bytes: Uint8Array): string =>
  Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length).toString("hex")

const fromHex = (text: string, length: number): Uint8Array | undefined => {
  if (text.length !== length * 2) return undefined
  const bytes = Buffer.from(text, "hex")
  return bytes.length === length ? bytes : undefined
}

/** The current span as a W3C trace context, when it has one of the right form. */
const currentTrace: Effect.Effect<Envelope.TraceContext | undefined> = Effect.map(
  Effect.option(Effect.currentSpan),
  Option.match({
    onNone: () => undefined,
    onSome: (span) => {
      const traceId = fromHex(span.traceId, 16)
      const spanId = fromHex(span.spanId, 8)
      return traceId && spanId ? { traceId, spanId, flags: span.sampled ? 1 : 0 } : undefined
    }
  })
)

const viewOf = (message: Message.Message): string | undefined =>
  "view" in message ? String(message.view) : undefined

export const make = (options: BroadcasterOptions) =>
  Effect.gen(function* () {
    const config = yield* BroadcastConfig.decode(options.config ?? {})
    const manager = yield* PeerManager.PeerManager
    const registry = yield* PeerRegistry.PeerRegistry
    const self = options.identity.peerId
    const networkId = options.networkId
    const tracing = options.tracing ?? false
    const observer = options.observer ?? {}
    const validators = new Set(options.validators)
    let others = options.validators.filter((v) => v !== self)
    const admitNonValidators = options.admitNonValidators ?? false
    const dedup = new Dedup(config.dedupWindow, config.maxOrigins, (origin) =>
      validators.has(origin as PeerId)
    )
    // The consumer of `inbound` takes from the manager's inbox itself and handles each chunk of
    // frames in its own fiber: one fiber hand-off per received message (the connection's data
    // callback, where the manager queues a frame, to the consumer). This node's own messages wait
    // here, bounded, and go out before the network's.
    let local: Array<Delivery> = []
    let resume: ((effect: Effect.Effect<Chunk.Chunk<Delivery>, Option.Option<never>>) => void) | undefined
    let closed = false
    /** Resumes a waiting consumer straight into `pull`. */
    const wake = () => {
      const r = resume
      if (r !== undefined) {
        resume = undefined
        r(pull)
      }
    }
    yield* Effect.addFinalizer(() =>
      Effect.sync(() => {
        closed = true
        local = []
        wake()
      })
    )

    // Sequence numbers start at the clock (millis << 16), so a restarted origin continues above
    // everything it sent before and receivers do not take its new envelopes for duplicates.
    let sequence = BigInt(Math.floor(yield* Clock.currentTimeMillis)) << 16n

    /** Why a message without an application channel cannot be sent. */
    const internalOnly = (message: Message.Message) =>
      new InvalidOutbound({
        what: message._tag,
        detail: "internal to the network layer; not sent by applications"
      })

    /** Why `message` cannot be sent, from the codec's (or the envelope's) refusal. */
    const invalid = (message: Message.Message, error: { readonly message: string }) =>
      new InvalidOutbound({ what: message._tag, detail: error.message })

    /** The encoding of `message` (behind `prefix` when given), or why it cannot be encoded. */
    const encodeOnly = (
      message: Message.Message,
      prefix: Uint8Array | undefined
    ): Uint8Array | InvalidOutbound => {
      const encoded = prefix === undefined ? Codec.encode(message) : Codec.encodeAfter(prefix, message)
      return Either.isRight(encoded) ? encoded.right : invalid(message, encoded.left)
    }

    /** The message's channel and its encoding, behind `prefix` when given. */
    const encode = (
      message: Message.Message,
      prefix?: Uint8Array
    ): Either.Either<{ readonly bytes: Uint8Array; readonly channel: number }, InvalidOutbound> => {
      const channel = channelOf(message._tag)
      if (channel === undefined) return Either.left(internalOnly(message))
      const bytes = encodeOnly(message, prefix)
      return bytes instanceof InvalidOutbound ? Either.left(bytes) : Either.right({ bytes, channel })
    }

    const typeAttributes = (message: Message.Message, channel: number) => {
      const attributes: Record<string, unknown> = { "message.type": message._tag, channel }
      const view = viewOf(message)
      if (view !== undefined) attributes.view = view
      return attributes
    }

    const spanAttributes = (message: Message.Message, channel: number, size: number) => ({
      ...typeAttributes(message, channel),
      size
    })

    // ---- outbound ----

    const seal = (message: Message.Message) =>
      Effect.gen(function* () {
        const { bytes, channel } = yield* encode(message)
        const trace = tracing ? yield* currentTrace : undefined
        const sealed = yield* Envelope.seal(options.identity, {
          networkId,
          sequence: sequence++,
          payload: bytes,
          trace
        }).pipe(Effect.mapError((e) => invalid(message, e)))
        return { envelope: sealed.envelope, slot: Payload.envelope(sealed.bytes), channel }
      })

    const fanOut = (targets: ReadonlyArray<PeerId>, message: Message.Message) =>
      Effect.gen(function* () {
        const { envelope, slot, channel } = yield* seal(message)
        const queued: Array<PeerId> = []
        const failed: Array<BroadcastReceipt["failed"][number]> = []
        const batch = [slot]
        for (const peer of targets) {
          if (peer === self) continue
          const result = yield* Effect.either(manager.send(peer, channel, batch))
          if (Either.isRight(result)) {
            queued.push(peer)
            observer.sent?.(peer, channel, message._tag, slot.length)
          } else {
            failed.push({ peer, error: result.left })
          }
        }
        if (tracing) {
          yield* Effect.annotateCurrentSpan({
            size: slot.length,
            queued: queued.length,
            failed: failed.length
          })
        }
        return {
          sequence: envelope.sequence,
          id: Envelope.id(envelope),
          queued,
          failed
        } satisfies BroadcastReceipt
      })

    const withSpan = <A, E, R>(
      name: string,
      message: Message.Message,
      attributes: Record<string, unknown>,
      effect: Effect.Effect<A, E, R>
    ): Effect.Effect<A, E, R> =>
      tracing
        ? Effect.withSpan(effect, name, {
            kind: "producer",
            // The size is known once the message is encoded: the span is annotated with it then.
            attributes: { ...typeAttributes(message, channelOf(message._tag) ?? -1), ...attributes }
          })
        : effect

    const broadcast: BroadcasterShape["broadcast"] = (message) =>
      withSpan("Broadcaster.broadcast", message, { recipients: others.length }, fanOut(others, message))

    const multicast: BroadcasterShape["multicast"] = (peers, message) =>
      withSpan("Broadcaster.multicast", message, { recipients: peers.length }, fanOut(peers, message))

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
        if (!closed && local.length < config.loopbackBuffer) {
          local.push(delivery)
          wake()
          return Effect.void
        }
        return Effect.fail(
          new TransportError.Backpressure({
            peer: self,
            channel,
            queuedFrames: config.loopbackBuffer,
            queuedBytes: 0,
            maxFrames: config.loopbackBuffer,
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
        yield* manager.send(peer, channel, [slot], sendOptions)
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
        if (error._tag !== "PeerNotConnected" || sendOptions?.waitForConnection === undefined)
          return Effect.fail(error)
        return Effect.map(manager.send(peer, channel, [slot], sendOptions), () => {
          observer.sent?.(peer, channel, message._tag, slot.length)
        })
      })

    const send = (
      peer: PeerId,
      message: Message.Message,
      sendOptions?: SendOptions
    ): Effect.Effect<void, SendError> =>
      tracing
        ? withSpan("Broadcaster.send", message, { peer }, sendTraced(peer, message, sendOptions))
        : sendBare(peer, message, sendOptions)

    // ---- inbound ----

    const reputationOf: Record<Rejection["reason"], PeerRegistry.ReputationEvent> = {
      malformed: "InvalidMessage",
      "bad-signature": "BadSignature",
      "wrong-channel": "ProtocolViolation",
      "reserved-message": "ProtocolViolation",
      "unknown-origin": "ProtocolViolation"
    }

    /** A delivery, a rejection (reported), or undefined for a duplicate. */
    type Outcome = Delivery | Rejection | undefined

    const isRejection = (o: Delivery | Rejection): o is Rejection => "reason" in o
    const isRefused = (m: Message.Message | Rejection): m is Rejection => !("_tag" in m)

    const reject = (
      peer: PeerId,
      channel: number,
      reason: Rejection["reason"],
      detail: string
    ): Rejection => ({
      peer,
      channel,
      reason,
      detail
    })

    /** Decodes a message body and checks it may arrive on this channel. */
    const decodeMessage = (peer: PeerId, channel: number, body: Uint8Array): Message.Message | Rejection => {
      const decoded = Codec.decode(body)
      if (Either.isLeft(decoded)) return reject(peer, channel, "malformed", decoded.left.message)
      const message = decoded.right
      const expected = channelOf(message._tag)
      if (expected === undefined) {
        return reject(peer, channel, "reserved-message", `${message._tag} is internal to the network layer`)
      }
      if (expected !== channel) {
        return reject(
          peer,
          channel,
          "wrong-channel",
          `${message._tag} belongs on channel ${expected}, came on ${channel}`
        )
      }
      return message
    }

    /** Everything about one slot except its receive span. */
    const process = (
      peer: PeerId,
      channel: number,
      slot: Uint8Array,
      parsed: Payload.Parsed,
      envelope: Envelope.Envelope | undefined
    ): Outcome => {
      if (envelope === undefined) {
        const message = decodeMessage(peer, channel, parsed.body)
        if (isRefused(message)) return message
        return {
          from: peer,
          origin: peer,
          message,
          channel,
          sequence: undefined,
          trace: parsed.trace,
          size: slot.length
        }
      }
      if (envelope.origin === self) return undefined
      if (!admitNonValidators && !validators.has(envelope.origin)) {
        return reject(
          peer,
          channel,
          "unknown-origin",
          `envelope origin ${envelope.origin.slice(0, 8)} is not a validator`
        )
      }
      // A copy of what was delivered costs no signature check: replays cannot burn this node's CPU.
      if (dedup.seen(envelope.origin, envelope.sequence)) return undefined
      const verified = Envelope.verify(envelope, networkId)
      if (Either.isLeft(verified)) return reject(peer, channel, "bad-signature", verified.left.message)
      const message = decodeMessage(peer, channel, envelope.payload)
      if (isRefused(message)) return message
      // Recorded only once verified and delivered: neither a forged copy nor a genuine one sent on
      // the wrong channel can shadow the real envelope.
      if (!dedup.admit(envelope.origin, envelope.sequence)) return undefined
      return {
        from: peer,
        origin: envelope.origin,
        message,
        channel,
        sequence: envelope.sequence,
        trace: Option.getOrUndefined(envelope.trace),
        size: slot.length
      }
    }

    /** Parses the slot and its envelope, if any: enough to know whether it carries a trace. */
    const open = (
      peer: PeerId,
      channel: number,
      slot: Uint8Array
    ): { readonly parsed: Payload.Parsed; readonly envelope: Envelope.Envelope | undefined } | Rejection => {
      const parsed = Payload.parse(slot)
      if (typeof parsed === "string") return reject(peer, channel, "malformed", parsed)
      if (parsed.kind !== Payload.ENVELOPE) return { parsed, envelope: undefined }
      const envelope = Envelope.decode(parsed.body)
      if (Either.isLeft(envelope)) return reject(peer, channel, "malformed", envelope.left.message)
      return { parsed, envelope: envelope.right }
    }

    const traceOf = (opened: {
      readonly parsed: Payload.Parsed
      readonly envelope: Envelope.Envelope | undefined
    }) => (opened.envelope === undefined ? opened.parsed.trace : Option.getOrUndefined(opened.envelope.trace))

    const receiveSpan = (
      peer: PeerId,
      channel: number,
      slot: Uint8Array,
      trace: Envelope.TraceContext,
      run: () => Outcome
    ) =>
      Effect.suspend((): Effect.Effect<Outcome> => {
        const outcome = run()
        if (outcome !== undefined && !isRejection(outcome)) {
          return Effect.annotateCurrentSpan({
            ...spanAttributes(outcome.message, channel, slot.length),
            peer,
            origin: outcome.origin
          }).pipe(Effect.as(outcome))
        }
        return Effect.annotateCurrentSpan({
          peer,
          channel,
          size: slot.length,
          outcome: outcome === undefined ? "duplicate" : outcome.reason
        }).pipe(Effect.as(outcome))
      }).pipe(
        Effect.withSpan("Broadcaster.receive", {
          kind: "consumer",
          parent: Tracer.externalSpan({
            traceId: hex(trace.traceId),
            spanId: hex(trace.spanId),
            sampled: (trace.flags & 1) === 1
          })
        }),
        (effect) => (options.tracer === undefined ? effect : Effect.withTracer(effect, options.tracer))
      )

    const settle = (
      outcome: Outcome,
      peer: PeerId,
      channel: number,
      out: Array<Delivery>,
      rejected: Array<Rejection>
    ) => {
      if (outcome === undefined) {
        observer.duplicate?.(peer, channel)
      } else if (isRejection(outcome)) {
        rejected.push(outcome)
        observer.rejected?.(outcome)
      } else {
        out.push(outcome)
        observer.delivered?.(outcome)
      }
    }

    /**
     * The deliveries of `frames`, after `before` (own messages): an array when every message was
     * handled synchronously, else an Effect (receive spans, reputation reports) that must not be cut
     * short: the messages are recorded as seen already.
     */
    const handleFrames = (
      frames: ReadonlyArray<PeerManager.InboundFrame>,
      before: Array<Delivery>
    ): Array<Delivery> | Effect.Effect<Array<Delivery>> => {
      const out = before
      const rejected: Array<Rejection> = []
      let traced: Array<Effect.Effect<void>> | undefined
      for (let f = 0; f < frames.length; f++) {
        const frame = frames[f]!
        const peer = frame.peer
        const channel = frame.channel
        const messages = frame.messages
        for (let m = 0; m < messages.length; m++) {
          const slot = messages[m]!
          // A bare message (the common case for `send`): no parse or open records.
          if (slot[0] === Payload.DIRECT && traced === undefined) {
            const message = decodeMessage(peer, channel, slot.subarray(1))
            if (isRefused(message)) settle(message, peer, channel, out, rejected)
            else {
              const delivery: Delivery = {
                from: peer,
                origin: peer,
                message,
                channel,
                sequence: undefined,
                trace: undefined,
                size: slot.length
              }
              out.push(delivery)
              observer.delivered?.(delivery)
            }
            continue
          }
          const opened = open(peer, channel, slot)
          if ("reason" in opened) {
            settle(opened, peer, channel, out, rejected)
            continue
          }
          const trace = tracing ? traceOf(opened) : undefined
          if (trace === undefined && traced === undefined) {
            const outcome = process(peer, channel, slot, opened.parsed, opened.envelope)
            if (outcome === undefined) observer.duplicate?.(peer, channel)
            else if (isRejection(outcome)) settle(outcome, peer, channel, out, rejected)
            else {
              out.push(outcome)
              observer.delivered?.(outcome)
            }
          } else {
            // Keep order: once one message needs a span, the rest of the chunk goes through Effects.
            const run = () => process(peer, channel, slot, opened.parsed, opened.envelope)
            traced ??= []
            traced.push(
              trace === undefined
                ? Effect.sync(() => settle(run(), peer, channel, out, rejected))
                : Effect.map(receiveSpan(peer, channel, slot, trace, run), (o) =>
                    settle(o, peer, channel, out, rejected)
                  )
            )
          }
        }
      }
      if (traced === undefined && rejected.length === 0) return out
      const report = Effect.suspend(() =>
        Effect.forEach(rejected, (r) => registry.report(r.peer, reputationOf[r.reason]), { discard: true })
      )
      return Effect.uninterruptible(
        (traced === undefined ? report : Effect.zipRight(Effect.all(traced, { discard: true }), report)).pipe(
          Effect.as(out)
        )
      )
    }

    const MAX_FRAMES = 256

    // Effect.async rather than a Deferred: `Deferred.unsafeMake` copies a prototype into a fresh
    // object, about 2 us, once per wait. No canceler, so no interruption handler is built per wait:
    // the callback of an interrupted wait may be called later, and the fiber runtime ignores that.
    const waitThenPull = Effect.async<Chunk.Chunk<Delivery>, Option.Option<never>>((callback) => {
      resume = callback
      manager.unsafeOnInbound(wake)
    })

    /** The next chunk for the consumer: own messages first, then the network's; waits for one. */
    const pull: Effect.Effect<Chunk.Chunk<Delivery>, Option.Option<never>> = Effect.suspend(
      (): Effect.Effect<Chunk.Chunk<Delivery>, Option.Option<never>> => {
        for (;;) {
          if (closed) return Effect.fail(Option.none())
          const frames = manager.unsafePoll(MAX_FRAMES)
          if (frames.length === 0 && local.length === 0) {
            return waitThenPull
          }
          let before: Array<Delivery> = []
          if (local.length > 0) {
            before = local
            local = []
          }
          const handled = handleFrames(frames, before)
          if (!Array.isArray(handled)) {
            return Effect.flatMap(handled, (out) =>
              out.length === 0 ? pull : Effect.succeed(Chunk.unsafeFromArray(out))
            )
          }
          // All duplicates or refused: look again rather than hand out an empty chunk.
          if (handled.length > 0) return Effect.succeed(Chunk.unsafeFromArray(handled))
        }
      }
    )

    // The stream is a plain channel loop over `pull` (Stream.repeatEffectChunkOption and
    // Stream.unwrapScoped wrap every chunk in several more Effect and channel steps).
    let consumers = 0
    const pullOrEnd: Effect.Effect<Chunk.Chunk<Delivery> | undefined> = Effect.catchAll(pull, () =>
      Effect.succeed(undefined)
    )
    let loop: EffectChannel.Channel<Chunk.Chunk<Delivery>, unknown, never, unknown, void, unknown>
    const next = EffectChannel.suspend(() => loop)
    loop = EffectChannel.flatMap(EffectChannel.fromEffect(pullOrEnd), (chunk) =>
      chunk === undefined ? EffectChannel.void : EffectChannel.zipRight(EffectChannel.write(chunk), next)
    )
    const inbound: BroadcasterShape["inbound"] = Stream.suspend(() => {
      // One consumer at a time: this run counts as one from its first pull to its end.
      let counted = false
      const first = EffectChannel.fromEffect(
        Effect.suspend(() => {
          if (consumers > 0) {
            return Effect.dieMessage(
              "Broadcaster.inbound (NodeNetwork.messages) has one consumer, and one is running already"
            )
          }
          consumers++
          counted = true
          return Effect.void
        })
      )
      return Stream.fromChannel(EffectChannel.zipRight(first, loop)).pipe(
        Stream.ensuring(
          Effect.sync(() => {
            if (counted) consumers--
          })
        )
      )
    })

    const setValidators = (recipients: ReadonlyArray<PeerId>, origins: ReadonlyArray<PeerId>) =>
      Effect.sync(() => {
        others = recipients.filter((v) => v !== self)
        validators.clear()
        for (const origin of origins) validators.add(origin)
        for (const recipient of recipients) validators.add(recipient)
        validators.add(self)
      })

    return {
      self,
      broadcast,
      multicast,
      send,
      inbound,
      setValidators
    } satisfies BroadcasterShape
  })
