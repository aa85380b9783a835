// Routed sends: a point-to-point message to a peer this node has no connection to, carried by
// validators connected to both. The message is sealed in an envelope whose signed payload names the
// target, so a relay can neither alter nor forge it, nor send it to anyone else. Relays verify the
// signature before forwarding (a forged envelope costs its sender reputation and goes no further),
// forward each envelope once, and only within a rate per peer that asks them to.

import type { PeerManager } from "@hotstuff2/peers"
import type { Identity, Message } from "@hotstuff2/wire"
import * as Effect from "effect/Effect"
import * as Random from "effect/Random"
import type { Core } from "./core.js"
import { queueTo, sealPayload } from "./outbound.js"
import * as Payload from "./payload.js"
import { encodeRouted } from "./tree/header.js"

type PeerId = Identity.PeerId

/** Relays tried per routed send. */
const ROUTE_VIA = 3
/** Routed envelopes a relay forwards per second for one peer, and its burst. */
const ROUTED_PER_SECOND = 500
const ROUTED_BURST = 1000

export const makeRouting = (core: Core) => {
  const buckets = new Map<PeerId, { tokens: number; at: number }>()

  /**
   * Seals `message` for `target` and queues it to up to 3 connected validators other than the
   * target, picked with Effect's Random. Fails with the target's `PeerNotConnected` when none took it.
   */
  const send = (target: PeerId, message: Message.Message, notConnected: PeerManager.PeerNotConnected) =>
    Effect.gen(function* () {
      const connected = new Set(yield* core.manager.connected)
      const candidates = core.others.filter((peer) => peer !== target && connected.has(peer))
      const via = (yield* Random.shuffle(candidates)).pipe((chunk) => [...chunk].slice(0, ROUTE_VIA))
      if (via.length === 0) return yield* Effect.fail(notConnected)
      const sealed = yield* sealPayload(core, message, Payload.ROUTED, (encoded) =>
        encodeRouted(target, encoded)
      )
      const { queued } = yield* queueTo(core, via, sealed, message._tag)
      if (queued.length === 0) return yield* Effect.fail(notConnected)
      core.observer.routed?.("sent")
    })

  /** Whether `peer` may have one more envelope forwarded now (a token bucket on the clock). */
  const take = (peer: PeerId, now: number): boolean => {
    let bucket = buckets.get(peer)
    if (bucket === undefined) {
      if (buckets.size >= 4096) buckets.clear()
      bucket = { tokens: ROUTED_BURST, at: now }
      buckets.set(peer, bucket)
    }
    bucket.tokens = Math.min(ROUTED_BURST, bucket.tokens + ((now - bucket.at) * ROUTED_PER_SECOND) / 1000)
    bucket.at = now
    if (bucket.tokens < 1) return false
    bucket.tokens -= 1
    return true
  }

  /**
   * Whether this node may carry an envelope for `target` that `peer` asks it to: the target is a
   * validator, and `peer` is within its rate (a token is taken). Checked before the envelope's
   * signature, so a flood costs at most one verification per token. A refusal is counted.
   */
  const admit = (peer: PeerId, target: PeerId, now: number): boolean => {
    if (!core.validators.has(target) || target === core.self) {
      core.observer.routed?.("no-route")
      return false
    }
    if (!take(peer, now)) {
      core.observer.routed?.("over-limit")
      return false
    }
    return true
  }

  /** Passes a verified, admitted slot on to `target`, unchanged; counted as forwarded or no-route. */
  const pass = (target: PeerId, slot: Uint8Array, channel: number) => {
    if (core.manager.unsafeSend(target, channel, [slot]) !== undefined) {
      core.observer.routed?.("no-route")
      return
    }
    core.observer.routed?.("forwarded")
    core.observer.relayed?.(target, channel, slot.length)
  }

  return { send, admit, pass }
}

export type Routing = ReturnType<typeof makeRouting>
