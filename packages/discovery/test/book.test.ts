// The record book's order of checks and its limits: a record it would not keep costs no signature
// check (a replayed flood of them costs almost nothing), and a full book makes room only by
// forgetting the oldest record of a peer that is not connected.
import { assert, describe, it } from "@effect/vitest"
import { Identity } from "@hotstuff2/wire"
import * as Either from "effect/Either"
import * as DiscoveryConfig from "../src/DiscoveryConfig.js"
import { Book } from "../src/internal/book.js"
import { sign } from "../src/internal/record.js"
import { id, NETWORK } from "./fixtures/cluster.js"

const config = Either.getOrThrow(DiscoveryConfig.decode({ maxNonValidatorRecords: 3 }))
const key = (k: number) => {
  const seed = new Uint8Array(32)
  new DataView(seed.buffer).setUint32(0, 700_000 + k)
  return Either.getOrThrow(Identity.fromSeed(seed))
}
const record = (k: number, subnet: number) =>
  Either.getOrThrow(sign(key(k), NETWORK, [`10.${subnet}.0.1:9000`], 1000n, 0n))
const forged = (k: number, subnet: number) => ({ ...record(k, subnet), signature: new Uint8Array(64) })

describe("Book", () => {
  it("refuses a record it would not keep before checking its signature", () => {
    const book = new Book(id(1), NETWORK, config, { allowLoopback: false }, false)
    const refused = book.offer(forged(1, 1), id(2), 0, false)
    assert.isTrue(Either.isLeft(refused) && refused.left.reason === "not-kept")
    // The same forgery for a validator would be kept: then the signature is checked, and fails.
    const checked = book.offer(forged(1, 1), id(2), 0, true)
    assert.isTrue(Either.isLeft(checked) && checked.left.reason === "bad-signature")
  })

  it("a full book forgets the oldest record of a peer not connected, and refuses when every peer is connected", () => {
    const book = new Book(id(1), NETWORK, config, { allowLoopback: false }, true)
    for (let k = 0; k < 3; k++) assert.isTrue(Either.isRight(book.offer(record(k, k), id(2), k, false)))
    const connected = new Set([key(0).peerId, key(1).peerId, key(2).peerId])
    const refused = book.offer(record(3, 3), id(2), 10, false, (peer) => connected.has(peer))
    assert.isTrue(Either.isLeft(refused) && refused.left.reason === "not-kept")
    connected.delete(key(1).peerId)
    connected.delete(key(0).peerId)
    assert.isTrue(Either.isRight(book.offer(record(3, 3), id(2), 11, false, (peer) => connected.has(peer))))
    const held = [...book.values()].map((e) => e.record.peer)
    // Key 0 (the oldest of the two not connected) made room.
    assert.deepStrictEqual(held.sort(), [key(1).peerId, key(2).peerId, key(3).peerId].sort())
  })

  it("refuses DNS names in records unless allowed: the dialer would resolve them anywhere, loopback included", () => {
    const named = Either.getOrThrow(sign(key(9), NETWORK, ["vm:9000", "localhost.nip.io:9000"], 1000n, 0n))
    const strict = new Book(id(1), NETWORK, config, { allowLoopback: false, allowNames: false }, true)
    const refused = strict.offer(named, id(2), 0, true)
    assert.isTrue(Either.isLeft(refused) && refused.left.reason === "bad-address")
    const lenient = new Book(id(1), NETWORK, config, { allowLoopback: false, allowNames: true }, true)
    assert.isTrue(Either.isRight(lenient.offer(named, id(2), 0, true)))
  })
})
