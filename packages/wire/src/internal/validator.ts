// A Schema compiled once into a plain predicate. Effect 3 interprets a Schema's AST on every
// validation (about 0.7 us for a Vote); this walks the AST once and returns closures that run the
// same checks, including every refinement's own filter function. It only answers yes or no: when
// it says no, the caller runs Effect's validator to get the detailed, path-carrying error. Any AST
// node it does not know falls back to Effect's `is` for that node, so the answer is always the
// Schema's answer.
import * as Option from "effect/Option"
import * as ParseResult from "effect/ParseResult"
import * as Schema from "effect/Schema"
import * as AST from "effect/SchemaAST"

export type Predicate = (u: unknown) => boolean

const parseOptions: AST.ParseOptions = {}
const hasOwn = Object.prototype.hasOwnProperty
const uint8ArrayAst = Schema.Uint8ArrayFromSelf.ast

const fallback = (ast: AST.AST): Predicate => ParseResult.is(Schema.make(ast))

const isOptionDeclaration = (ast: AST.Declaration): boolean =>
  (ast.annotations[AST.TypeConstructorAnnotationId] as { _tag?: string } | undefined)?._tag ===
  "effect/Option"

export const compile = (ast: AST.AST): Predicate => {
  switch (ast._tag) {
    case "Refinement": {
      const from = compile(ast.from)
      const filter = ast.filter
      return (u) => from(u) && Option.isNone(filter(u, parseOptions, ast))
    }
    case "Literal": {
      const literal = ast.literal
      return (u) => u === literal
    }
    case "StringKeyword":
      return (u) => typeof u === "string"
    case "NumberKeyword":
      return (u) => typeof u === "number"
    case "BigIntKeyword":
      return (u) => typeof u === "bigint"
    case "BooleanKeyword":
      return (u) => typeof u === "boolean"
    case "TypeLiteral": {
      if (ast.indexSignatures.length > 0) return fallback(ast)
      const names: Array<PropertyKey> = []
      const checks: Array<Predicate> = []
      for (const ps of ast.propertySignatures) {
        if (ps.isOptional) return fallback(ast)
        names.push(ps.name)
        checks.push(compile(ps.type))
      }
      const n = names.length
      return (u) => {
        if (typeof u !== "object" || u === null) return false
        const o = u as Record<PropertyKey, unknown>
        for (let i = 0; i < n; i++) {
          const name = names[i]!
          if (!hasOwn.call(o, name) || !checks[i]!(o[name])) return false
        }
        return true
      }
    }
    case "TupleType": {
      // Only the array form (`Schema.Array(item)`): no fixed elements, one rest element.
      if (ast.elements.length > 0 || ast.rest.length !== 1) return fallback(ast)
      const item = compile(ast.rest[0]!.type)
      return (u) => {
        if (!Array.isArray(u)) return false
        for (let i = 0; i < u.length; i++) if (!item(u[i])) return false
        return true
      }
    }
    case "Union": {
      const members = ast.types.map(compile)
      return (u) => {
        for (let i = 0; i < members.length; i++) if (members[i]!(u)) return true
        return false
      }
    }
    case "Declaration": {
      if (ast === uint8ArrayAst) return (u) => u instanceof Uint8Array
      if (isOptionDeclaration(ast) && ast.typeParameters.length === 1) {
        const value = compile(ast.typeParameters[0]!)
        return (u) => Option.isOption(u) && (Option.isNone(u) || value(u.value))
      }
      return fallback(ast)
    }
    case "Suspend":
      return fallback(ast)
    default:
      return fallback(ast)
  }
}
