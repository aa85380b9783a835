// The PeerIds the encoder has written, with their raw bytes. A node encodes the same few PeerIds
// (its own, its validator set's) over and over: a string seen before skips the pattern check and
// the hex parse. Sound because strings are immutable and only strings of the PeerId form are
// remembered, checked here: a writer may run on a value nothing validated (an envelope's origin);
// bounded, because callers choose the strings.
const LIMIT = 4096
const known = new Map<string, Uint8Array>()

/** The raw bytes of a PeerId already validated and written, if it is remembered. */
export const rawPeerId = (id: unknown): Uint8Array | undefined =>
  typeof id === "string" ? known.get(id) : undefined

const PEER_ID = /^[0-9a-f]{64}$/

/** Remembers a PeerId's raw bytes (copied); a string not of the PeerId form is not remembered. */
export const rememberPeerId = (id: string, raw: Uint8Array): void => {
  if (!PEER_ID.test(id)) return
  if (known.size >= LIMIT) known.delete(known.keys().next().value!)
  known.set(id, Uint8Array.from(raw))
}
