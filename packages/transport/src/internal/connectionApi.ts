// The Effect face of a connection core: what `Connection` users see.
import type { Frame } from "@hotstuff2/wire"
import * as Chunk from "effect/Chunk"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as Stream from "effect/Stream"
import type { CloseReason, Connection, InboundFrame } from "../Transport.js"
import { ConnectionClosed } from "../TransportError.js"
import type { ConnectionCore } from "./connection.js"
import { encodeGoodbye } from "./handshake.js"

const awaitClosed = (core: ConnectionCore): Effect.Effect<CloseReason> =>
  Effect.async<CloseReason>((resume) => {
    const unsubscribe = core.onClosed((reason) => resume(Effect.succeed(reason)))
    return Effect.sync(unsubscribe)
  })

/** Closes gracefully, telling the peer why, and waits until the pipe is closed. */
export const closeCore = (core: ConnectionCore, reason: string, detail: string): Effect.Effect<void> =>
  Effect.suspend(() => {
    core.close(reason, detail, encodeGoodbye(reason, detail))
    return Effect.asVoid(awaitClosed(core))
  })

/** Shutdown: hands queued frames and a goodbye to the pipe (or cuts a peer that is not reading). */
export const shutdownCore = (core: ConnectionCore, reason: string, detail: string): Effect.Effect<void> =>
  Effect.async<void>((resume) => {
    core.shutdown(reason, detail, encodeGoodbye(reason, detail), () => resume(Effect.void))
  })

export const makeConnection = (core: ConnectionCore): Connection => {
  const receive = Effect.async<ReadonlyArray<InboundFrame>, ConnectionClosed>((resume) => {
    const failure = core.receiverFailure
    if (failure !== undefined) {
      core.receiverFailure = undefined
      resume(Effect.die(failure.error))
      return
    }
    const callback = (frames: Array<InboundFrame> | undefined) =>
      resume(
        frames === undefined
          ? Effect.fail(
              new ConnectionClosed({ peer: core.remotePeer, reason: core.closeReason?.reason ?? "closed" })
            )
          : Effect.succeed(frames)
      )
    try {
      core.take(callback)
    } catch (e) {
      resume(Effect.die(e))
    }
    return Effect.sync(() => core.cancelTake(callback))
  })
  const unsafeSend = (channel: number, messages: ReadonlyArray<Frame.Outbound>) =>
    core.send(channel, messages)
  return {
    id: core.id,
    localPeer: core.options.localPeer,
    remotePeer: core.remotePeer,
    remoteAddress: core.remoteAddress,
    direction: core.options.direction,
    send: (channel, messages) =>
      Effect.suspend(() => {
        const error = core.send(channel, messages)
        return error === undefined ? Effect.void : Effect.fail(error)
      }),
    unsafeSend,
    unsafeReceive: (receiver) => core.setReceiver(receiver),
    unsafeAdmitCompressed: (admit) => core.setAdmitCompressed(admit),
    frames: Stream.repeatEffectChunkOption(
      Effect.mapBoth(receive, { onFailure: () => Option.none(), onSuccess: Chunk.unsafeFromArray })
    ),
    receive,
    close: (options) =>
      closeCore(core, options?.reason ?? "closed", options?.detail ?? "closed by the application"),
    closed: awaitClosed(core),
    stats: Effect.sync(() => core.stats())
  }
}
