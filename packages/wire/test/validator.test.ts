import { assert, describe, it } from "@effect/vitest"
import * as Arbitrary from "effect/Arbitrary"
import * as fc from "effect/FastCheck"
import * as Schema from "effect/Schema"
import { Envelope, Message } from "../src/index.js"
import { compile } from "../src/internal/validator.js"
import { replacements, replaceSomewhere } from "./fixtures/corrupt.js"

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
