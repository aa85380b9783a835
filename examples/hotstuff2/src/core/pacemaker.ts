/**
 * The pacemaker's arithmetic: who leads a view, how long a view's timer runs, and where a restarted
 * replica resumes. The view changes themselves (on a certificate, a timeout certificate or a timer)
 * are in `Replica.ts`, beside the state they touch.
 */
import type { CoreConfig, PeerId, SafetyState } from "./types.js"

/** The leader of `view`: validators[view mod n]. */
export const leaderOf = (validators: ReadonlyArray<PeerId>, view: bigint): PeerId =>
  validators[Number(view % BigInt(validators.length))]!

/** The view timer after `failures` consecutive failed views: baseTimeout * 2^failures, capped. */
export const timerDuration = (
  config: Pick<CoreConfig, "baseTimeout" | "maxTimeout">,
  failures: number
): number => Math.min(config.maxTimeout, config.baseTimeout * 2 ** Math.min(failures, 52))

/**
 * The view a replica starts in: max(locked.view + 1, lastVoted, lastTimedOut), at least 1. It never
 * votes twice in a view because voting needs view > lastVoted (so it does not vote in `lastVoted`
 * again) and a leader proposes only in a view above lastVoted. Resuming in `lastTimedOut` (rather
 * than one above) lets it time out there again with the others still in that view: its timeout
 * signs only the view, so repeating it is harmless, and the others may need it to form their
 * timeout certificate.
 */
export const resumeView = (safety: SafetyState): bigint => {
  let view = safety.locked.view + 1n
  if (safety.lastVoted > view) view = safety.lastVoted
  if (safety.lastTimedOut > view) view = safety.lastTimedOut
  return view < 1n ? 1n : view
}
