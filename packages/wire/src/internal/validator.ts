// A Schema compiled once into a plain predicate. Effect 3 interprets a Schema's AST on every
// validation (about 0.7 us for a Vote); this walks the AST once and generates a function that runs
// the same checks, including every refinement's own filter function. It only answers yes or no: when
// it says no, the caller runs Effect's validator to get the detailed, path-carrying error. Any AST
// node it does not know falls back to Effect's `is` for that node, so the answer is always the
// Schema's answer.
import * as Option from "effect/Option"
import * as ParseResult from "effect/ParseResult"
import * as Schema from "effect/Schema"
import * as AST from "effect/SchemaAST"
import { PeerId } from "../Identity.js"
import { Gen, InlineCheck } from "./compiled.js"
import { rawPeerId } from "./peerIds.js"

export type Predicate = (u: unknown) => boolean

const parseOptions: AST.ParseOptions = {}
const hasOwn = Object.prototype.hasOwnProperty
const uint8ArrayAst = Schema.Uint8ArrayFromSelf.ast
const peerIdAst = PeerId.ast

/** Any node not compiled below: Effect's own `is` for it. */
const fallback = (g: Gen, ast: AST.AST, v: string): string =>
  `${g.ref(ParseResult.is(Schema.make(ast)))}(${v})`

const isOptionDeclaration = (ast: AST.Declaration): boolean =>
  (ast.annotations[AST.TypeConstructorAnnotationId] as { _tag?: string } | undefined)?._tag ===
  "effect/Option"

/**
 * Compiles `ast` into one generated function per Schema (internal/compiled.ts), so that every check
 * runs at a call site of its own instead of through closures shared by every Schema.
 */
export const compile = (ast: AST.AST): Predicate => {
  const g = new Gen()
  const body = emit(g, ast, "u")
  return g.build<Predicate>(g.fn("u", `return ${body};`))
}

const emitRefinement = (g: Gen, ast: AST.Refinement, v: string): string => {
  const inline = ast.annotations[InlineCheck] as InlineCheck | undefined
  return inline !== undefined
    ? `(${emit(g, ast.from, v)} && ${inline(v)})`
    : `(${emit(g, ast.from, v)} && ${g.ref(Option.isNone)}(${g.ref(ast.filter)}(${v}, ${g.ref(parseOptions)}, ${g.ref(ast)})))`
}

/** An expression over `v` (an identifier) that is the Schema's answer for `ast`. */
const emit = (g: Gen, ast: AST.AST, v: string): string => {
  switch (ast._tag) {
    case "Refinement":
      if (ast === peerIdAst) {
        // A PeerId the encoder has written before passed this very check (internal/peerIds.ts).
        return `(${g.ref(rawPeerId)}(${v}) !== undefined || ${emitRefinement(g, ast, v)})`
      }
      return emitRefinement(g, ast, v)
    case "Literal":
      return `${v} === ${g.ref(ast.literal)}`
    case "StringKeyword":
      return `typeof ${v} === "string"`
    case "NumberKeyword":
      return `typeof ${v} === "number"`
    case "BigIntKeyword":
      return `typeof ${v} === "bigint"`
    case "BooleanKeyword":
      return `typeof ${v} === "boolean"`
    case "TypeLiteral": {
      if (ast.indexSignatures.length > 0) return fallback(g, ast, v)
      const lines = [`if (typeof o !== "object" || o === null) return false`]
      for (const ps of ast.propertySignatures) {
        if (ps.isOptional) return fallback(g, ast, v)
        const key = g.ref(ps.name)
        lines.push(`if (!${g.ref(hasOwn)}.call(o, ${key})) return false`)
        lines.push(`{ const x = o[${key}]; if (!(${emit(g, ps.type, "x")})) return false }`)
      }
      lines.push("return true")
      return `${g.fn("o", lines.join("\n"))}(${v})`
    }
    case "TupleType": {
      // Only the array form (`Schema.Array(item)`): no fixed elements, one rest element.
      if (ast.elements.length > 0 || ast.rest.length !== 1) return fallback(g, ast, v)
      const item = emit(g, ast.rest[0]!.type, "x")
      return `${g.fn(
        "a",
        `if (!Array.isArray(a)) return false
for (let i = 0; i < a.length; i++) { const x = a[i]; if (!(${item})) return false }
return true`
      )}(${v})`
    }
    case "Union":
      return `(${ast.types.map((t) => emit(g, t, v)).join(" || ")})`
    case "Declaration": {
      if (ast === uint8ArrayAst) return `${v} instanceof Uint8Array`
      if (isOptionDeclaration(ast) && ast.typeParameters.length === 1) {
        const value = emit(g, ast.typeParameters[0]!, "x")
        return `${g.fn(
          "o",
          `if (!${g.ref(Option.isOption)}(o)) return false
if (${g.ref(Option.isNone)}(o)) return true
const x = o.value
return ${value}`
        )}(${v})`
      }
      return fallback(g, ast, v)
    }
    default:
      return fallback(g, ast, v)
  }
}
