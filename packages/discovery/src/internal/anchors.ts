// Anchors: a few validators this node was connected to, with an address to dial them by, kept in the
// data directory. After a restart they are dialled as `anchor` addresses, which gossip can never push
// out: a node whose gossip peers all lie still finds the validators it knew.
import * as fs from "node:fs/promises"
import * as path from "node:path"
import { Identity } from "@hotstuff2/wire"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Schema from "effect/Schema"
import type { PeerId } from "./record.js"

export const ANCHORS_FILE = "anchors.json"

const AnchorsFile = Schema.parseJson(
  Schema.Struct({
    version: Schema.Literal(1),
    anchors: Schema.Array(Schema.Struct({ peer: Identity.PeerId, address: Schema.String }))
  }),
  { space: 2 }
)

export interface Anchor {
  readonly peer: PeerId
  readonly address: string
}

export class Anchors {
  private list: Array<Anchor> = []
  private writing: Promise<void> = Promise.resolve()

  constructor(
    private readonly directory: string | undefined,
    private readonly max: number
  ) {}

  /** Reads the file; a missing or unreadable one gives none (logged), never a failure to start. */
  load: Effect.Effect<ReadonlyArray<Anchor>> = Effect.suspend(() => {
    if (this.directory === undefined || this.max === 0) return Effect.succeed([])
    const file = path.join(this.directory, ANCHORS_FILE)
    return Effect.tryPromise(() => fs.readFile(file, "utf8")).pipe(
      Effect.flatMap((text) => Schema.decodeUnknownEither(AnchorsFile)(text)),
      Effect.map((stored) => {
        this.list = stored.anchors.slice(0, this.max).map((a) => ({ peer: a.peer, address: a.address }))
        return this.list as ReadonlyArray<Anchor>
      }),
      Effect.catchAll((e) =>
        (e as { error?: { code?: string } }).error?.code === "ENOENT"
          ? Effect.succeed([])
          : Effect.as(Effect.logWarning(`anchors: ${file} ignored`, e), [])
      )
    )
  })

  /** A validator connected to, dialable at `address`: first in the list, which is saved when it changed. */
  reached(peer: PeerId, address: string): Effect.Effect<void> {
    return Effect.suspend(() => {
      if (this.directory === undefined || this.max === 0) return Effect.void
      if (this.list[0]?.peer === peer && this.list[0].address === address) return Effect.void
      this.list = [{ peer, address }, ...this.list.filter((a) => a.peer !== peer)].slice(0, this.max)
      return this.save
    })
  }

  private get save(): Effect.Effect<void> {
    const directory = this.directory!
    const text = Either.getOrThrow(Schema.encodeEither(AnchorsFile)({ version: 1, anchors: this.list }))
    // One write at a time, in order; each to a temporary file renamed over the old one.
    this.writing = this.writing
      .catch(() => {})
      .then(async () => {
        const file = path.join(directory, ANCHORS_FILE)
        await fs.mkdir(directory, { recursive: true })
        await fs.writeFile(`${file}.tmp`, text)
        await fs.rename(`${file}.tmp`, file)
      })
    return Effect.tryPromise(() => this.writing).pipe(
      Effect.catchAll((e) => Effect.logWarning("anchors: could not save", e))
    )
  }
}
