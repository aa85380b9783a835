// The `hotstuff2-net` entry (bin/hotstuff2-net.js imports the compiled module). Errors print as
// one line, `hotstuff2-net: <what went wrong>`, and exit 1; SIGINT/SIGTERM close everything cleanly.
import { ValidationError } from "@effect/cli"
import { NodeContext, NodeRuntime } from "@effect/platform-node"
import * as Cause from "effect/Cause"
import * as Console from "effect/Console"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import { cli } from "./commands.js"

const report = <E>(cause: Cause.Cause<E>): Effect.Effect<void> => {
  if (Cause.isInterruptedOnly(cause)) return Effect.void
  const failure = Cause.failureOption(cause)
  if (Option.isSome(failure)) {
    const error = failure.value
    // @effect/cli has printed its own usage errors.
    if (ValidationError.isValidationError(error)) return Effect.void
    if (error instanceof Error) return Console.error(`hotstuff2-net: ${error.message}`)
  }
  return Console.error(Cause.pretty(cause))
}

cli(process.argv).pipe(
  Effect.tapErrorCause(report),
  Effect.provide(NodeContext.layer),
  NodeRuntime.runMain({ disableErrorReporting: true })
)
