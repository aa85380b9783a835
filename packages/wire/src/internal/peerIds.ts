// The PeerIds the encoder has written, with their raw bytes. A node encodes the same few PeerIds
// (its own, its validator set's) over and over: a string seen before skips the pattern check and
// the hex parse. Sound because strings are immutable and only PeerIds that passed the Schema are
// remembered (writers run after validation); bounded, because callers choose the strings.
const LIMIT = 4096
const known = new Map<string, Uint8Array>()

/** The raw bytes of a PeerId already validated and written, if it is remembered. */
export const rawPeerId = (id: unknown): Uint8Array | undefined =>
  typeof id === "string" ? known.get(id) : undefined

/** Remembers a validated PeerId's raw bytes (copied). */
export const rememberPeerId = (id: string, raw: Uint8Array): void => {
  if (known.size >= LIMIT) known.delete(known.keys().next().value!)
  known.set(id, Uint8Array.from(raw))
}
