// The Broadcaster's core: builds the shared state (core.ts) and wires the jobs that live in their
// own modules: outbound encoding, sealing and the direct strategy (outbound.ts), inbound verify and
// dedup (inbound.ts), the `inbound` stream and loopback (stream.ts), spans (spans.ts).
import { PeerManager, PeerRegistry } from "@hotstuff2/peers"
import type { Identity } from "@hotstuff2/wire"
import * as Clock from "effect/Clock"
import * as Effect from "effect/Effect"
import * as BroadcastConfig from "../BroadcastConfig.js"
import type { BroadcasterOptions, BroadcasterShape } from "../Broadcaster.js"
import { makeCore } from "./core.js"
import { makeInbound } from "./inbound.js"
import { direct, makeSend } from "./outbound.js"
import { withSpan } from "./spans.js"
import { makeStream } from "./stream.js"

export { channelOf } from "./channels.js"

type PeerId = Identity.PeerId

export const make = (options: BroadcasterOptions) =>
  Effect.gen(function* () {
    const config = yield* BroadcastConfig.decode(options.config ?? {})
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
      // Sequence numbers start at the clock (millis << 16), so a restarted origin continues above
      // everything it sent before and receivers do not take its new envelopes for duplicates.
      sequence: BigInt(Math.floor(yield* Clock.currentTimeMillis)) << 16n
    })
    const { handleFrames } = makeInbound(core)
    const { inbound, loopback } = yield* makeStream({
      manager: core.manager,
      loopbackBuffer: config.loopbackBuffer,
      handleFrames
    })
    const send = makeSend(core, loopback)

    const broadcast: BroadcasterShape["broadcast"] = (message) =>
      withSpan(
        core.tracing,
        "Broadcaster.broadcast",
        message,
        { recipients: core.others.length },
        Effect.suspend(() => direct(core, core.others, message))
      )

    const multicast: BroadcasterShape["multicast"] = (peers, message) =>
      withSpan(
        core.tracing,
        "Broadcaster.multicast",
        message,
        { recipients: peers.length },
        direct(core, peers, message)
      )

    const setValidators = (recipients: ReadonlyArray<PeerId>, origins: ReadonlyArray<PeerId>) =>
      Effect.sync(() => {
        core.others = recipients.filter((v) => v !== core.self)
        core.validators.clear()
        for (const origin of origins) core.validators.add(origin)
        for (const recipient of recipients) core.validators.add(recipient)
        core.validators.add(core.self)
      })

    return { self: core.self, broadcast, multicast, send, inbound, setValidators } satisfies BroadcasterShape
  })
