// WIRE.md 9.6: the message slot vectors (`hex vector=Slot.*`), checked byte for byte in both directions,
// and the refusals 9.6 derives from the reliable one.
// They belong to this package; wire's golden.test.ts leaves the `Slot.` names to this file.
import { readFileSync } from "node:fs"
import { assert, describe, it } from "@effect/vitest"
import { Codec, Envelope, Identity } from "@hotstuff2/wire"
import * as Either from "effect/Either"
import * as Payload from "../src/internal/payload.js"
import {
  decodeReceipt,
  decodeRouted,
  decodeTreeHeader,
  encodeReceipt,
  encodeRouted,
  encodeTreeHeader,
  RECEIPT,
  ROUTED,
  slot,
  TREE,
  type TreeHeader
} from "../src/internal/tree/header.js"
import { Tree, treeSeed } from "../src/internal/tree/layout.js"

const wireMd = readFileSync(new URL("../../wire/WIRE.md", import.meta.url), "utf8")

/** Every ```hex vector=NAME block of WIRE.md, as lowercase hex. */
const documented = new Map<string, string>()
for (const [, name, body] of wireMd.matchAll(/^```hex vector=(\S+)[ \t]*\n([\s\S]*?)^```[ \t]*$/gm)) {
  documented.set(name!, body!.replace(/\s+/g, "").toLowerCase())
}

const fromHex = (text: string): Uint8Array => new Uint8Array(Buffer.from(text, "hex"))
const hex = (bytes: Uint8Array): string => Buffer.from(bytes).toString("hex")
const concat = (...parts: ReadonlyArray<Uint8Array>): Uint8Array => new Uint8Array(Buffer.concat(parts))
const counting = (length: number, first: number): Uint8Array =>
  Uint8Array.from({ length }, (_, i) => (first + i) & 0xff)

/** WIRE.md section 9's common values: the vector identity (seed 01 02 ... 20) and network. */
const identity = Either.getOrThrow(Identity.fromSeed(counting(32, 0x01)))
const networkId = "hotstuff2-test"

const vectorBytes = (name: string): Uint8Array => {
  const text = documented.get(name)
  if (text === undefined) throw new Error(`WIRE.md has no vector ${name}`)
  return fromHex(text)
}
const qc41 = vectorBytes("QuorumCertificate")
const vote = vectorBytes("Vote")

const sealed = (sequence: bigint, payload: Uint8Array): Uint8Array =>
  Either.getOrThrow(Envelope.seal(identity, { networkId, sequence, payload })).bytes

/** Opens a TREE or ROUTED slot as a receiver does: kind, envelope, signature, then the payload. */
const openSlot = (bytes: Uint8Array, kind: number): Envelope.Envelope => {
  assert.strictEqual(bytes[0], kind)
  const envelope = Either.getOrThrow(Envelope.decode(bytes.subarray(1)))
  assert.isTrue(Either.isRight(Envelope.verify(envelope, networkId)), "the origin's signature verifies")
  assert.isTrue(Either.isLeft(Envelope.verify(envelope, `${networkId}-other`)), "and binds the network")
  assert.strictEqual(envelope.origin, identity.peerId)
  return envelope
}

const treeHeader: TreeHeader = { epoch: 2n, round: 42n, fanout: 4, demoted: [1, 3] }
/** The `Ack` vector's incarnation: the reliable vectors belong to the stream it acknowledges. */
const incarnation = 1_700_000_000_000n

/** Reads a reliable slot's header as a receiver does; fails on a refusal. */
const openReliable = (bytes: Uint8Array): Payload.ReliableHeader => {
  const parsed = Payload.parse(bytes)
  if (typeof parsed === "string") assert.fail(parsed)
  assert.strictEqual(parsed.kind, Payload.RELIABLE)
  const header = Payload.parseReliable(parsed.body)
  if (typeof header === "string") assert.fail(header)
  return header
}
const routedTarget = hex(counting(32, 0x60)) as Identity.PeerId

/** 20 validators: P and the 19 ids whose 32 bytes all equal i, for i = 0x01 .. 0x13. */
const treeMembers = [
  identity.peerId,
  ...Array.from({ length: 19 }, (_, i) => hex(new Uint8Array(32).fill(i + 1)) as Identity.PeerId)
]
const orderInput = {
  members: treeMembers,
  origin: identity.peerId,
  networkId,
  epoch: 2n,
  round: 42n,
  fanout: 4,
  demoted: [2, 5]
}

const checks: Readonly<
  Record<string, { readonly write: () => Uint8Array; readonly read: (b: Uint8Array) => void }>
> = {
  "Slot.tree": {
    write: () => slot(TREE, sealed(3n, encodeTreeHeader(treeHeader, qc41))),
    read: (bytes) => {
      const envelope = openSlot(bytes, TREE)
      assert.strictEqual(envelope.sequence, 3n)
      const decoded = decodeTreeHeader(envelope.payload, treeMembers.length)
      if (typeof decoded === "string") assert.fail(decoded)
      assert.deepStrictEqual(decoded.header, treeHeader)
      assert.strictEqual(hex(decoded.message), hex(qc41))
      assert.isTrue(Either.isRight(Codec.decode(decoded.message)))
    }
  },
  "Slot.receipt": {
    write: () => encodeReceipt([1n, 2n, 300n]),
    read: (bytes) => {
      assert.strictEqual(bytes[0], RECEIPT)
      assert.deepStrictEqual(decodeReceipt(bytes.subarray(1)), [1n, 2n, 300n])
    }
  },
  "Slot.routed": {
    write: () => slot(ROUTED, sealed(4n, encodeRouted(routedTarget, vote))),
    read: (bytes) => {
      const envelope = openSlot(bytes, ROUTED)
      assert.strictEqual(envelope.sequence, 4n)
      const decoded = decodeRouted(envelope.payload)
      if (typeof decoded === "string") assert.fail(decoded)
      assert.strictEqual(decoded.target, routedTarget)
      assert.strictEqual(hex(decoded.message), hex(vote))
    }
  },
  "Slot.forward": {
    // The tree vector, passed on unchanged to the member whose 32 bytes all equal 0x13.
    write: () => Payload.forward(new Uint8Array(32).fill(0x13), vectorBytes("Slot.tree")),
    read: (bytes) => {
      const parsed = Payload.parse(bytes)
      if (typeof parsed === "string") assert.fail(parsed)
      assert.strictEqual(parsed.kind, Payload.FORWARD)
      const forward = Payload.parseForward(parsed.body)
      if (typeof forward === "string") assert.fail(forward)
      assert.strictEqual(forward.target, treeMembers[19])
      assert.strictEqual(hex(forward.inner), hex(vectorBytes("Slot.tree")))
      // What the target reads: the tree slot the origin sealed, its header and message intact.
      const envelope = openSlot(forward.inner, TREE)
      const decoded = decodeTreeHeader(envelope.payload, treeMembers.length)
      if (typeof decoded === "string") assert.fail(decoded)
      assert.deepStrictEqual(decoded.header, treeHeader)
      assert.strictEqual(hex(decoded.message), hex(qc41))
    }
  },
  "Slot.reliable": {
    // A bare message: its origin is the connection's peer, the stream's sender.
    write: () => Payload.reliable(incarnation, 42n, 42n, concat(Uint8Array.of(Payload.DIRECT), qc41)),
    read: (bytes) => {
      const header = openReliable(bytes)
      assert.deepStrictEqual([header.incarnation, header.sequence, header.floor], [incarnation, 42n, 42n])
      assert.strictEqual(header.inner[0], Payload.DIRECT)
      assert.strictEqual(hex(header.inner.subarray(1)), hex(qc41))
      assert.isTrue(Either.isRight(Codec.decode(header.inner.subarray(1))))
    }
  },
  "Slot.reliableEnvelope": {
    write: () => Payload.reliable(incarnation, 51n, 42n, Payload.envelope(sealed(5n, vote))),
    read: (bytes) => {
      const header = openReliable(bytes)
      assert.deepStrictEqual([header.incarnation, header.sequence, header.floor], [incarnation, 51n, 42n])
      // Sealed by P: a receiver takes it from P only (the envelope's origin is the stream's sender).
      const envelope = openSlot(header.inner, Payload.ENVELOPE)
      assert.strictEqual(envelope.sequence, 5n)
      assert.strictEqual(hex(envelope.payload), hex(vote))
    }
  },
  "Slot.treeSeed": {
    write: () => treeSeed(networkId, identity.peerId, 2n, 42n),
    read: () => {}
  },
  "Slot.treeOrder": {
    // One byte per position: the member's index in the sorted members (P, 0x79..., sorts last).
    write: () => {
      const sorted = [...treeMembers].sort()
      return Uint8Array.from(Tree.make(orderInput).order, (peer) => sorted.indexOf(peer))
    },
    read: (bytes) => {
      const sorted = [...treeMembers].sort()
      const tree = Tree.make(orderInput)
      assert.deepStrictEqual(
        [...bytes].map((i) => sorted[i]),
        tree.order
      )
      // Demoted 2 and 5 (ids 0x03... and 0x06...) come last.
      assert.deepStrictEqual([...bytes.subarray(-2)].sort(), [2, 5])
    }
  }
}

describe("WIRE.md 9.6 message slot vectors", () => {
  it("has a check for every Slot.* vector, and a vector for every check", () => {
    assert.deepStrictEqual(
      [...documented.keys()].filter((name) => name.startsWith("Slot.")).sort(),
      Object.keys(checks).sort()
    )
  })

  for (const [name, { write, read }] of Object.entries(checks)) {
    it(`${name}: the implementation writes and reads exactly the documented bytes`, () => {
      const expected = documented.get(name)
      assert.strictEqual(hex(write()), expected)
      read(fromHex(expected!))
    })
  }

  it("Slot.reliable: the receiver refuses the vector cut after its header, with sequence 0, a floor above the sequence, or a tree slot inside", () => {
    const vector = vectorBytes("Slot.reliable")
    /** The vector with `bytes` written at `at`. */
    const changed = (at: number, bytes: ReadonlyArray<number>) => {
      const out = Uint8Array.from(vector)
      out.set(bytes, at)
      return out
    }
    const refusals: ReadonlyArray<readonly [Uint8Array, RegExp]> = [
      [vector.subarray(0, Payload.RELIABLE_HEADER), /carries nothing/],
      [vector.subarray(0, Payload.RELIABLE_HEADER - 1), /cut short \(23 of 24 bytes\)/],
      [changed(9, [0, 0, 0, 0, 0, 0, 0, 0]), /sequence numbers start at 1/],
      [changed(17, [0, 0, 0, 0, 0, 0, 0, 43]), /floor 43 is above the sequence 42/],
      [changed(Payload.RELIABLE_HEADER, [Payload.TREE]), /carries kind 0x03/]
    ]
    for (const [bytes, reason] of refusals) {
      const parsed = Payload.parse(bytes)
      if (typeof parsed === "string") assert.fail(parsed)
      const header = Payload.parseReliable(parsed.body)
      assert.isString(header, `refused: ${reason}`)
      assert.match(header as string, reason)
    }
  })
})
