import { assert, describe, it } from "@effect/vitest"
import * as Arbitrary from "effect/Arbitrary"
import * as fc from "effect/FastCheck"
import * as Option from "effect/Option"
import * as Schema from "effect/Schema"
import { Envelope, Message } from "../src/index.js"
import { compile } from "../src/internal/validator.js"

const replacements: ReadonlyArray<unknown> = [
  -1n,
  2n ** 64n,
  0n,
  "x",
  "\ud800",
  1.5,
  -1,
  2 ** 32,
  new Uint8Array(31),
  new Uint8Array(32),
  new Uint8Array(64),
  [],
  [new Uint8Array(64)],
  null,
  undefined,
  Option.none(),
  Option.some(1),
  {},
  "ab".repeat(32),
  "AB".repeat(32)
]

/** Replaces the value at one path inside `value` (chosen by `pick`) with `replacement`. */
const replaceSomewhere = (value: unknown, pick: number, replacement: unknown): unknown => {
  const paths: Array<Array<string | number>> = []
  const walk = (v: unknown, at: Array<string | number>) => {
    paths.push(at)
    if (Array.isArray(v)) {
      for (let i = 0; i < v.length; i++) walk(v[i], [...at, i])
    } else if (v !== null && typeof v === "object" && !(v instanceof Uint8Array) && !Option.isOption(v)) {
      for (const [k, x] of Object.entries(v)) walk(x, [...at, k])
    }
  }
  walk(value, [])
  const path = paths[pick % paths.length]!
  const rebuild = (v: any, i: number): any => {
    if (i === path.length) return replacement
    const key = path[i]!
    if (Array.isArray(v)) return v.map((x, j) => (j === key ? rebuild(x, i + 1) : x))
    return { ...v, [key]: rebuild(v[key], i + 1) }
  }
  return rebuild(value, 0)
}

const schemas = [...Message.Message.members, Envelope.Envelope, Message.Block] as ReadonlyArray<
  Schema.Schema<unknown>
>

describe("compiled validator", () => {
  schemas.forEach((schema, i) => {
    const compiled = compile(schema.ast)
    const is = Schema.is(schema)
    it.prop(
      `agrees with Schema.is on valid and corrupted values (schema ${i}: ${String(schema.ast).slice(0, 40)})`,
      [Arbitrary.make(schema), fc.nat(), fc.nat({ max: replacements.length - 1 })],
      ([value, pick, r]) => {
        assert.isTrue(compiled(value), "a generated value is valid")
        const corrupted = replaceSomewhere(value, pick, replacements[r])
        assert.strictEqual(compiled(corrupted), is(corrupted))
      },
      { fastCheck: { numRuns: 200 } }
    )
  })
})
