// Inbound: turns the manager's frames into deliveries, synchronously per chunk of frames. Each slot
// is parsed, its envelope (if any) checked against the validator set, deduplicated before its
// signature is verified, verified once, decoded and checked against its channel. Refusals are
// reported to the registry; a receive span is made only for traced messages.
import type { PeerManager, PeerRegistry } from "@hotstuff2/peers"
import { Codec, Envelope, type Identity, type Message } from "@hotstuff2/wire"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Option from "effect/Option"
import type { Delivery, Rejection } from "../Broadcaster.js"
import { channelOf } from "./channels.js"
import type { Core } from "./core.js"
import * as Payload from "./payload.js"
import { receiveSpan, spanAttributes } from "./spans.js"

type PeerId = Identity.PeerId

/** A delivery, a rejection (reported), or undefined for a duplicate. */
export type Outcome = Delivery | Rejection | undefined

const reputationOf: Record<Rejection["reason"], PeerRegistry.ReputationEvent> = {
  malformed: "InvalidMessage",
  "bad-signature": "BadSignature",
  "wrong-channel": "ProtocolViolation",
  "reserved-message": "ProtocolViolation",
  "unknown-origin": "ProtocolViolation"
}

const isRejection = (o: Delivery | Rejection): o is Rejection => "reason" in o
const isRefused = (m: Message.Message | Rejection): m is Rejection => !("_tag" in m)

export const reject = (
  peer: PeerId,
  channel: number,
  reason: Rejection["reason"],
  detail: string
): Rejection => ({ peer, channel, reason, detail })

/** Decodes a message body and checks it may arrive on this channel. */
export const decodeMessage = (
  peer: PeerId,
  channel: number,
  body: Uint8Array
): Message.Message | Rejection => {
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

/** A slot's kind and body, and its envelope when it has one. */
interface Opened {
  readonly parsed: Payload.Parsed
  readonly envelope: Envelope.Envelope | undefined
}

export const makeInbound = (core: Core) => {
  const { self, observer, dedup, validators, networkId } = core

  /** Everything about one slot except its receive span. */
  const process = (peer: PeerId, channel: number, slot: Uint8Array, opened: Opened): Outcome => {
    const { parsed, envelope } = opened
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
    if (!core.admitNonValidators && !validators.has(envelope.origin)) {
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
  const open = (peer: PeerId, channel: number, slot: Uint8Array): Opened | Rejection => {
    const parsed = Payload.parse(slot)
    if (typeof parsed === "string") return reject(peer, channel, "malformed", parsed)
    if (parsed.kind !== Payload.ENVELOPE) return { parsed, envelope: undefined }
    const envelope = Envelope.decode(parsed.body)
    if (Either.isLeft(envelope)) return reject(peer, channel, "malformed", envelope.left.message)
    return { parsed, envelope: envelope.right }
  }

  const traceOf = (opened: Opened) =>
    opened.envelope === undefined ? opened.parsed.trace : Option.getOrUndefined(opened.envelope.trace)

  const spanned = (
    peer: PeerId,
    channel: number,
    slot: Uint8Array,
    trace: Envelope.TraceContext,
    run: () => Outcome
  ) =>
    receiveSpan(
      trace,
      core.tracer,
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
      })
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
        const trace = core.tracing ? traceOf(opened) : undefined
        if (trace === undefined && traced === undefined) {
          settle(process(peer, channel, slot, opened), peer, channel, out, rejected)
        } else {
          // Keep order: once one message needs a span, the rest of the chunk goes through Effects.
          const run = () => process(peer, channel, slot, opened)
          traced ??= []
          traced.push(
            trace === undefined
              ? Effect.sync(() => settle(run(), peer, channel, out, rejected))
              : Effect.map(spanned(peer, channel, slot, trace, run), (o) =>
                  settle(o, peer, channel, out, rejected)
                )
          )
        }
      }
    }
    if (traced === undefined && rejected.length === 0) return out
    const report = Effect.suspend(() =>
      Effect.forEach(rejected, (r) => core.registry.report(r.peer, reputationOf[r.reason]), { discard: true })
    )
    return Effect.uninterruptible(
      (traced === undefined ? report : Effect.zipRight(Effect.all(traced, { discard: true }), report)).pipe(
        Effect.as(out)
      )
    )
  }

  return { handleFrames }
}
