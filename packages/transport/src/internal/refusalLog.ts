// Refused inbound attempts as log lines a flood cannot multiply: the first refusal after a quiet
// `refusalLogInterval` is logged at once with its details; the ones after it within the interval are
// counted by reason and logged as one summary line when the interval ends (on Effect's Clock, through
// the transport's timers), with the latest refusal as a sample.
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import type * as Fiber from "effect/Fiber"
import type { TransportConfig } from "../TransportConfig.js"
import type { HandshakeFailure, InboundRefused } from "../TransportError.js"
import type { Timers } from "./timers.js"

const annotations = (refusal: InboundRefused) => ({
  remote: refusal.remoteAddress,
  reason: refusal.reason,
  detail: refusal.detail,
  ...(refusal.peer ? { peer: refusal.peer } : {})
})

/** A logger for one listener's refusals: call it with each refusal. */
export const refusalLog = (
  config: TransportConfig,
  now: () => number,
  timers: Timers,
  run: (effect: Effect.Effect<void>) => Fiber.RuntimeFiber<void, never>
): ((refusal: InboundRefused) => Effect.Effect<void>) => {
  const intervalMillis = Duration.toMillis(config.refusalLogInterval)
  let lastLogAt = Number.NEGATIVE_INFINITY
  let pending: { [reason in HandshakeFailure]?: number } = {}
  let pendingCount = 0
  let latest: InboundRefused | undefined

  const summary = Effect.suspend(() => {
    const counts = pending
    const count = pendingCount
    const sample = latest
    pending = {}
    pendingCount = 0
    latest = undefined
    lastLogAt = now()
    if (count === 0 || sample === undefined) return Effect.void
    const byReason = Object.entries(counts)
      .map(([reason, n]) => `${reason}: ${n}`)
      .join(", ")
    return Effect.logWarning(
      `${count} more inbound connections refused within ${Duration.format(config.refusalLogInterval)} (${byReason}); the latest:`
    ).pipe(Effect.annotateLogs(annotations(sample)))
  })

  return (refusal) =>
    Effect.suspend(() => {
      const at = now()
      if (pendingCount === 0 && at - lastLogAt >= intervalMillis) {
        lastLogAt = at
        return Effect.logWarning("inbound connection refused").pipe(Effect.annotateLogs(annotations(refusal)))
      }
      if (pendingCount === 0) timers(Math.max(0, lastLogAt + intervalMillis - at), () => run(summary))
      pending[refusal.reason] = (pending[refusal.reason] ?? 0) + 1
      pendingCount++
      latest = refusal
      return Effect.void
    })
}
