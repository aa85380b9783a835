// The `hotstuff2-net` entry (bin/hotstuff2-net.js imports the compiled module). Errors print as
// one line, `hotstuff2-net: <what went wrong>`, and exit 1; SIGINT/SIGTERM close everything cleanly.
// Modules by path, not the packages' indexes, and only the services @effect/cli needs (a file system,
// paths, a terminal): @effect/platform-node's index loads its HTTP server, cluster, SQL, worker and
// process modules too, which a validator never uses.
import * as ValidationError from "@effect/cli/ValidationError"
import * as NodeFileSystem from "@effect/platform-node/NodeFileSystem"
import * as NodePath from "@effect/platform-node/NodePath"
import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import * as NodeTerminal from "@effect/platform-node/NodeTerminal"
import * as Cause from "effect/Cause"
import * as Console from "effect/Console"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
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
  Effect.provide(Layer.mergeAll(NodeFileSystem.layer, NodePath.layer, NodeTerminal.layer)),
  NodeRuntime.runMain({ disableErrorReporting: true })
)
