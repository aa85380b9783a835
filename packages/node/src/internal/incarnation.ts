// This node's reliable-stream incarnation: receivers take a higher one for a restarted sender, so
// its new messages are not mistaken for duplicates of the last run's. The clock's millis at start,
// and, with a data directory, at least one above the last run's (kept in `incarnation` there), so a
// clock that went back, or two starts within one millisecond, still give a higher one.
import * as fs from "node:fs"
import * as path from "node:path"
import * as Clock from "effect/Clock"
import * as Effect from "effect/Effect"

const FILE = "incarnation"

export const make = (dataDirectory: string | undefined): Effect.Effect<bigint> =>
  Effect.gen(function* () {
    const now = BigInt(Math.floor(yield* Clock.currentTimeMillis))
    if (dataDirectory === undefined) return now
    const file = path.join(dataDirectory, FILE)
    // No file yet (a first start), or an unreadable one: the clock alone decides.
    const last = yield* Effect.try(() => fs.readFileSync(file, "utf8").trim()).pipe(
      Effect.map((text) => (/^\d{1,20}$/.test(text) ? BigInt(text) : -1n)),
      Effect.orElseSucceed(() => -1n)
    )
    const incarnation = now > last ? now : last + 1n
    yield* Effect.try(() => {
      fs.mkdirSync(dataDirectory, { recursive: true })
      const temporary = `${file}.${process.pid}.tmp`
      fs.writeFileSync(temporary, `${incarnation}\n`)
      fs.renameSync(temporary, file)
    }).pipe(
      // Not fatal: the clock's value still serves; only a later start may then reuse a lower one.
      Effect.catchAll((e) => Effect.logWarning(`cannot persist the incarnation in ${file}`, e.error))
    )
    return incarnation
  })
