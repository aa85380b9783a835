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
import { channelOf, isPointToPointOnly } from "./channels.js"
import type { Core } from "./core.js"
import * as Payload from "./payload.js"
import type { Held, ReliableReceiver } from "./reliable/receiver.js"
import type { Routing } from "./routing.js"
import { receiveSpan, spanAttributes } from "./spans.js"
import { decodeReceipt, decodeRouted } from "./tree/header.js"
import type { TreeRelay } from "./tree/relay.js"

type PeerId = Identity.PeerId

/** A delivery, a rejection (reported), undefined for a duplicate, null for a slot for this layer only. */
export type Outcome = Delivery | Rejection | undefined | null

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

/**
 * `decodeMessage` for a message inside an envelope or a reliable slot: request/response frames are
 * refused there (point to point only, and a bare one never reaches this far: the node diverts it).
 */
const decodeCarried = (
  peer: PeerId,
  channel: number,
  body: Uint8Array,
  how: string
): Message.Message | Rejection => {
  const message = decodeMessage(peer, channel, body)
  if (isRefused(message) || !isPointToPointOnly(message._tag)) return message
  return reject(peer, channel, "reserved-message", `${message._tag} is point to point only; refused ${how}`)
}

/** A slot's kind and body, and its envelope when it has one. */
interface Opened {
  readonly parsed: Payload.Parsed
  readonly envelope: Envelope.Envelope | undefined
}

export const makeInbound = (
  core: Core,
  parts: {
    readonly relay: TreeRelay
    readonly routing: Routing
    /** Tree receipts from `peer` for this node's envelopes. */
    readonly onReceipt: (peer: PeerId, sequences: ReadonlyArray<bigint>) => void
    readonly reliable: ReliableReceiver
  }
) => {
  const { self, observer, dedup, validators, networkId } = core
  const { relay, routing } = parts

  /** Everything about one slot except its receive span. */
  const process = (peer: PeerId, channel: number, slot: Uint8Array, opened: Opened, held?: Held): Outcome => {
    const { parsed, envelope } = opened
    if (envelope === undefined) {
      if (parsed.kind === Payload.FORWARD) return passOn(peer, channel, parsed.body)
      if (parsed.kind === Payload.RECEIPT) {
        const sequences = decodeReceipt(parsed.body)
        if (typeof sequences === "string") return reject(peer, channel, "malformed", sequences)
        parts.onReceipt(peer, sequences)
        return null
      }
      const message =
        held === undefined
          ? decodeMessage(peer, channel, parsed.body)
          : decodeCarried(peer, channel, parsed.body, "in a reliable slot")
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
    const { origin, sequence } = envelope
    if (origin === self) return undefined
    if (!core.admitNonValidators && !validators.has(origin)) {
      return reject(
        peer,
        channel,
        "unknown-origin",
        `envelope origin ${origin.slice(0, 8)} is not a validator`
      )
    }
    // A copy of what was delivered costs no signature check: replays cannot burn this node's CPU.
    // (A reliable one was deduplicated by its stream already, which also keeps it when it comes
    // later than the window of envelope sequence numbers.)
    if (held === undefined && dedup.seen(origin, sequence)) {
      // A tree copy again (a repair, a slow relay): the origin is told again, so it stops repairing.
      if (parsed.kind === Payload.TREE) relay.acknowledge(origin, sequence, channel)
      return undefined
    }
    // A routed envelope for another peer: the relay's rate is checked before the signature.
    let routedTarget: PeerId | undefined
    if (parsed.kind === Payload.ROUTED) {
      const routed = decodeRouted(envelope.payload)
      if (typeof routed === "string") return reject(peer, channel, "malformed", routed)
      if (routed.target !== self) {
        if (!routing.admit(peer, routed.target, core.now())) return null
        routedTarget = routed.target
      }
    }
    const verified = Envelope.verify(envelope, networkId)
    if (Either.isLeft(verified)) return reject(peer, channel, "bad-signature", verified.left.message)
    let body = envelope.payload
    let tree: Exclude<ReturnType<TreeRelay["open"]>, string> | undefined
    if (parsed.kind === Payload.TREE) {
      const decoded = relay.open(envelope)
      if (typeof decoded === "string") return reject(peer, channel, "malformed", decoded)
      tree = decoded
      body = decoded.message
    } else if (parsed.kind === Payload.ROUTED) {
      const routed = decodeRouted(envelope.payload)
      if (typeof routed === "string") return reject(peer, channel, "malformed", routed)
      const message = decodeCarried(peer, channel, routed.message, "in an envelope")
      if (isRefused(message)) return message
      if (routedTarget !== undefined) {
        // For another peer: forwarded once, and never delivered here.
        if (dedup.admit(origin, sequence)) routing.pass(routedTarget, slot, channel)
        return null
      }
      body = routed.message
    }
    const message = decodeCarried(peer, channel, body, "in an envelope")
    if (isRefused(message)) return message
    // Recorded only once verified and delivered: neither a forged copy nor a genuine one sent on
    // the wrong channel can shadow the real envelope.
    if (held === undefined && !dedup.admit(origin, sequence)) return undefined
    if (tree !== undefined) {
      // Relayed as soon as verified, before the application sees it.
      relay.forward(origin, tree.header, slot, channel)
      relay.acknowledge(origin, sequence, channel)
    }
    return {
      from: peer,
      origin,
      message,
      channel,
      sequence,
      trace: Option.getOrUndefined(envelope.trace),
      size: slot.length
    }
  }

  /**
   * A forward slot: a tree slot for its target, from a relay the origin asked to repair through. For
   * this node it is read as if the relay had sent the tree slot; for another, this node is the relay:
   * the inner envelope is verified before it is passed on, unchanged, within the asking peer's rate.
   */
  const passOn = (peer: PeerId, channel: number, body: Uint8Array): Outcome => {
    const forward = Payload.parseForward(body)
    if (typeof forward === "string") return reject(peer, channel, "malformed", forward)
    const opened = open(peer, channel, forward.inner)
    if ("reason" in opened) return opened
    if (forward.target === self) return process(peer, channel, forward.inner, opened)
    const envelope = opened.envelope!
    if (!validators.has(envelope.origin)) {
      return reject(
        peer,
        channel,
        "unknown-origin",
        `envelope origin ${envelope.origin.slice(0, 8)} is not a validator`
      )
    }
    // The rate first: a forward repeated over and over costs one verification per token at most.
    if (!routing.admit(peer, forward.target as PeerId, core.now())) return null
    const verified = Envelope.verify(envelope, networkId)
    if (Either.isLeft(verified)) return reject(peer, channel, "bad-signature", verified.left.message)
    routing.pass(forward.target as PeerId, forward.inner, channel)
    return null
  }

  /** Parses the slot and its envelope, if any: enough to know whether it carries a trace. */
  const open = (peer: PeerId, channel: number, slot: Uint8Array): Opened | Rejection => {
    const parsed = Payload.parse(slot)
    if (typeof parsed === "string") return reject(peer, channel, "malformed", parsed)
    if (parsed.kind !== Payload.ENVELOPE && parsed.kind !== Payload.TREE && parsed.kind !== Payload.ROUTED) {
      return { parsed, envelope: undefined }
    }
    const envelope = Envelope.decode(parsed.body)
    if (Either.isLeft(envelope)) return reject(peer, channel, "malformed", envelope.left.message)
    return { parsed, envelope: envelope.right }
  }

  /**
   * A reliable message released by its stream (in order): read as the slot it carries, from its
   * origin. An envelope in it must be the sender's own: the stream is the sender's.
   */
  const openHeld = (peer: PeerId, held: Held): Opened | Rejection => {
    const opened = open(peer, held.channel, held.slot)
    if ("reason" in opened) return opened
    if (opened.envelope !== undefined && opened.envelope.origin !== peer) {
      return reject(
        peer,
        held.channel,
        "malformed",
        `reliable slot from ${peer.slice(0, 8)} carries an envelope of ${opened.envelope.origin.slice(0, 8)}`
      )
    }
    return opened
  }

  const withStream = (outcome: Outcome, held: Held): Outcome =>
    outcome === undefined || outcome === null || isRejection(outcome)
      ? outcome
      : { ...outcome, reliable: { incarnation: held.incarnation, sequence: held.sequence } }

  /**
   * Messages a stream released outside a chunk of frames (a gap given up by the timer): read
   * synchronously, without receive spans; refusals are reported in the background.
   */
  const handleReleased = (peer: PeerId, released: ReadonlyArray<Held>): Array<Delivery> => {
    const out: Array<Delivery> = []
    const rejected: Array<Rejection> = []
    for (const held of released) {
      const opened = openHeld(peer, held)
      const outcome =
        "reason" in opened ? opened : withStream(process(peer, held.channel, held.slot, opened, held), held)
      settle(outcome, peer, held.channel, out, rejected)
    }
    for (const r of rejected) core.fork(Effect.asVoid(core.registry.report(r.peer, reputationOf[r.reason])))
    return out
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
        if (outcome !== undefined && outcome !== null && !isRejection(outcome)) {
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
          outcome: outcome === undefined ? "duplicate" : outcome === null ? "internal" : outcome.reason
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
    if (outcome === null) return
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
    /** One opened slot: read now, or behind the chunk's first traced one (its receive span). */
    const dispatch = (
      peer: PeerId,
      channel: number,
      slot: Uint8Array,
      opened: Opened,
      held: Held | undefined
    ) => {
      const trace = core.tracing ? traceOf(opened) : undefined
      const run =
        held === undefined
          ? () => process(peer, channel, slot, opened)
          : () => withStream(process(peer, channel, slot, opened, held), held)
      if (trace === undefined && traced === undefined) {
        settle(run(), peer, channel, out, rejected)
      } else {
        // Keep order: once one message needs a span, the rest of the chunk goes through Effects.
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
        if (slot[0] === Payload.RELIABLE) {
          const header = Payload.parseReliable(slot.subarray(1))
          if (typeof header === "string") {
            settle(reject(peer, channel, "malformed", header), peer, channel, out, rejected)
            continue
          }
          for (const held of parts.reliable.offer(peer, channel, header).deliver) {
            const opened = openHeld(peer, held)
            if ("reason" in opened) settle(opened, peer, held.channel, out, rejected)
            else dispatch(peer, held.channel, held.slot, opened, held)
          }
          continue
        }
        const opened = open(peer, channel, slot)
        if ("reason" in opened) {
          settle(opened, peer, channel, out, rejected)
          continue
        }
        dispatch(peer, channel, slot, opened, undefined)
      }
    }
    // Receipts owed for this chunk's tree envelopes go out when it is done: one slot per origin.
    // So do reliable acks that are due now (the rest wait for `ackDelay`).
    parts.reliable.flush()
    if (traced === undefined) {
      relay.flush()
      if (rejected.length === 0) return out
    }
    const report = Effect.suspend(() =>
      Effect.forEach(rejected, (r) => core.registry.report(r.peer, reputationOf[r.reason]), { discard: true })
    )
    const flushed = Effect.sync(relay.flush)
    return Effect.uninterruptible(
      (traced === undefined
        ? report
        : Effect.all([Effect.all(traced, { discard: true }), flushed, report], { discard: true })
      ).pipe(Effect.as(out))
    )
  }

  return { handleFrames, handleReleased }
}
