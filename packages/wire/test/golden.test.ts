// WIRE.md's test vectors are the contract with peers written in other languages: the bytes there must
// be exactly what this implementation writes, and must decode to the values they describe.
import { readFileSync } from "node:fs"
import { assert, describe, it } from "@effect/vitest"
import * as Either from "effect/Either"
import { Codec, Envelope, Frame, Identity } from "../src/index.js"
import { blockDefinition, definitions } from "../src/Message.js"
import { fromHex, hex, plain } from "./fixtures/plain.js"
import { type RefusedVector, refused, type Vector, vectors } from "./fixtures/vectors.js"

const wireMd = readFileSync(new URL("../WIRE.md", import.meta.url), "utf8")

/** Every ```hex KIND=NAME block of WIRE.md (KIND is `vector` or `refused`), as lowercase hex. */
const documented = (kind: "vector" | "refused"): ReadonlyMap<string, string> => {
  const found = new Map<string, string>()
  const block = new RegExp(`^\`\`\`hex ${kind}=(\\S+)[ \t]*\n([\\s\\S]*?)^\`\`\`[ \t]*$`, "gm")
  for (const [, name, body] of wireMd.matchAll(block)) {
    if (found.has(name!)) throw new Error(`WIRE.md has two ${kind} blocks named ${name}`)
    const text = body!.replace(/\s+/g, "").toLowerCase()
    if (!/^([0-9a-f]{2})+$/.test(text)) throw new Error(`WIRE.md ${kind} ${name} is not whole bytes of hex`)
    found.set(name!, text)
  }
  return found
}
// `Slot.*` vectors (WIRE.md 9.6) are @hotstuff2/broadcast's, checked by its test/slotVectors.test.ts.
const documentedVectors = new Map([...documented("vector")].filter(([name]) => !name.startsWith("Slot.")))
const documentedRefused = documented("refused")

const right = <A, E>(result: Either.Either<A, E>, what: string): A =>
  Either.getOrThrowWith(result, (e) => new Error(`${what} failed: ${String((e as any)?.message ?? e)}`))

const check = (vector: Vector, expected: string): void => {
  switch (vector.kind) {
    case "message": {
      assert.strictEqual(hex(right(Codec.encode(vector.message), "encode")), expected)
      const decoded = right(Codec.decode(fromHex(expected)), "decode")
      assert.deepStrictEqual(plain(decoded), plain(vector.message))
      return
    }
    case "signingBytes": {
      assert.strictEqual(hex(right(Codec.signingBytes(vector.message), "signingBytes")), expected)
      assert.isTrue(
        Identity.verify(vector.signer, fromHex(expected), vector.message.signature),
        "the message's signature verifies over the documented signing bytes"
      )
      return
    }
    case "frame": {
      assert.strictEqual(hex(right(Frame.encode(vector.frame), "Frame.encode")), expected)
      const decoded = right(Frame.decode(fromHex(expected)), "Frame.decode")
      assert.deepStrictEqual(plain(decoded), plain(vector.frame))
      return
    }
    case "frameDecodeOnly": {
      const bytes = fromHex(expected)
      const { compressed, ...decoded } = right(Frame.decode(bytes), "Frame.decode")
      assert.deepStrictEqual(plain(decoded), plain(vector.frame))
      // A deflated frame is marked so once inflated (its cost was charged before inflating).
      assert.strictEqual(compressed === true, (bytes[2]! & Frame.Flags.deflate) !== 0)
      return
    }
    case "envelope": {
      const { envelope, bytes } = vector.sealed
      assert.strictEqual(hex(bytes), expected, "seal wrote the documented bytes")
      assert.strictEqual(hex(Either.getOrThrow(Envelope.encode(envelope))), expected)
      const opened = right(Envelope.open(fromHex(expected), vector.networkId), "Envelope.open")
      assert.deepStrictEqual(plain(opened.envelope), plain(envelope))
      assert.deepStrictEqual(plain(opened.message), plain(vector.message))
      assert.strictEqual(Envelope.id(opened.envelope), Envelope.id(envelope))
      const elsewhere = Envelope.open(fromHex(expected), `${vector.networkId}-other`)
      assert.isTrue(
        Either.isLeft(elsewhere) && elsewhere.left._tag === "BadSignature",
        "the signature binds the network id"
      )
      return
    }
    case "envelopeSigningBytes": {
      assert.strictEqual(hex(vector.signingBytes), expected)
      const { origin, signature } = vector.sealed.envelope
      assert.isTrue(
        Identity.verify(origin, fromHex(expected), signature),
        "the envelope's signature verifies over the documented signing bytes"
      )
      return
    }
    case "envelopeId": {
      assert.strictEqual(Envelope.id(vector.sealed.envelope), expected)
      const decoded = right(Envelope.decode(vector.sealed.bytes), "Envelope.decode")
      assert.strictEqual(Envelope.id(decoded), expected)
      return
    }
  }
}

const sameNames = (fixtures: ReadonlyArray<string>, doc: ReadonlyMap<string, string>, kind: string) => {
  assert.deepStrictEqual(
    fixtures.filter((name) => !doc.has(name)),
    [],
    `fixtures without a \`hex ${kind}=\` block in WIRE.md`
  )
  assert.deepStrictEqual(
    [...doc.keys()].filter((name) => !fixtures.includes(name)),
    [],
    `\`hex ${kind}=\` blocks in WIRE.md without a fixture`
  )
}

describe("WIRE.md test vectors", () => {
  it("documents every fixture, and every documented vector has a fixture", () => {
    sameNames(Object.keys(vectors), documentedVectors, "vector")
  })

  it("has a vector named after every message type, of that type", () => {
    for (const tag of Codec.typeCodes.keys()) {
      const vector = vectors[tag]
      assert.isTrue(vector?.kind === "message" && vector.message._tag === tag, `no vector for ${tag}`)
    }
  })

  for (const [name, vector] of Object.entries(vectors)) {
    it(`${name}: the implementation writes and reads exactly the documented bytes`, () => {
      const expected = documentedVectors.get(name)
      assert.isDefined(expected, `WIRE.md has no vector ${name}`)
      check(vector, expected!)
    })
  }
})

/** The (field, wire type) rows of the table under a heading line of WIRE.md, in order. */
const tableAfter = (heading: string): ReadonlyArray<readonly [string, string]> => {
  const lines = wireMd.split("\n")
  const at = lines.indexOf(heading)
  if (at < 0) throw new Error(`WIRE.md has no heading "${heading}"`)
  const rows: Array<readonly [string, string]> = []
  let inTable = false
  for (const line of lines.slice(at + 1)) {
    if (line.startsWith("#")) break
    if (!line.startsWith("|")) {
      if (inTable) break
      continue
    }
    inTable = true
    const [field, type] = line
      .split("|")
      .slice(1, 3)
      .map((cell) => /^`([^`]+)`$/.exec(cell.trim())?.[1])
    if (field !== undefined && type !== undefined) rows.push([field, type])
  }
  return rows
}

const rowsOf = (fields: { readonly [name: string]: { readonly spec: string } }) =>
  Object.entries(fields).map(([name, field]) => [name, field.spec] as const)

describe("WIRE.md field tables", () => {
  for (const definition of definitions) {
    const heading = `#### \`0x${definition.type.toString(16).padStart(2, "0")}\` ${definition.tag}`
    it(`${heading.slice(5)}: the table lists the fields in wire order with their wire types`, () => {
      assert.deepStrictEqual(tableAfter(heading), rowsOf(definition.fields))
    })
  }

  it("Block and Envelope: the tables list the fields in wire order with their wire types", () => {
    assert.deepStrictEqual(tableAfter("#### Block"), rowsOf(blockDefinition.fields))
    assert.deepStrictEqual(tableAfter("#### Envelope"), rowsOf(Envelope.definition.fields))
  })

  it("TraceContext: the table lists the fields in wire order", () => {
    // The option field hides its item's wire form, which the Envelope.withTrace vector checks.
    assert.deepStrictEqual(
      tableAfter("#### TraceContext").map(([name]) => name),
      Object.keys(Envelope.TraceContext.fields)
    )
  })
})

const decoders: Record<
  RefusedVector["decoder"],
  (bytes: Uint8Array) => Either.Either<unknown, { readonly _tag: string; readonly message: string }>
> = { message: Codec.decode, frame: (bytes) => Frame.decode(bytes), envelope: Envelope.decode }

describe("WIRE.md refused inputs", () => {
  it("documents every refused fixture, and every documented one has a fixture", () => {
    sameNames(Object.keys(refused), documentedRefused, "refused")
  })

  for (const [name, { decoder, reason }] of Object.entries(refused)) {
    it(`${name}: the ${decoder} decoder refuses it for the documented reason`, () => {
      const bytes = documentedRefused.get(name)
      assert.isDefined(bytes, `WIRE.md has no refused input ${name}`)
      const error = Either.flip(decoders[decoder](fromHex(bytes!)))
      if (Either.isLeft(error)) assert.fail(`${name} was accepted`)
      else assert.match(`${error.right._tag}: ${error.right.message}`, reason)
    })
  }
})
