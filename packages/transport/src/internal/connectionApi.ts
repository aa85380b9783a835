// The Effect face of a connection core: what `Connection` users see.
import * as Chunk from "effect/Chunk"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as Stream from "effect/Stream"
import type { CloseReason, Connection, InboundFrame } from "../Transport.js"
import type { ConnectionCore } from "./connection.js"
import { encodeGoodbye } from "./handshake.js"

const awaitClosed = (core: ConnectionCore): Effect.Effect<CloseReason> =>
  Effect.async<CloseReason>((resume) => {
    core.onClosed((reason) => resume(Effect.succeed(reason)))
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
  const take = Effect.async<Chunk.Chunk<InboundFrame>, Option.Option<never>>((resume) => {
    core.take((frames) =>
      resume(
        frames === undefined ? Effect.fail(Option.none()) : Effect.succeed(Chunk.unsafeFromArray(frames))
      )
    )
    return Effect.sync(() => core.cancelTake())
  })
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
    frames: Stream.repeatEffectChunkOption(take),
    close: (options) =>
      closeCore(core, options?.reason ?? "closed", options?.detail ?? "closed by the application"),
    closed: awaitClosed(core),
    stats: Effect.sync(() => core.stats())
  }
}
