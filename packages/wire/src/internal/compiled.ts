// Each message definition compiled into plain, monomorphic JavaScript: a reader, a size function and
// a writer per message type, with nested structs, lists and options inlined as their own functions.
// The generic field closures in field.ts are shared by every message type, so V8 sees every call
// and property access in them from fourteen shapes (megamorphic); a function generated per message
// type sees one. The generated code calls the same Reader and Writer methods as field.ts, and
// field.ts stays the reference: Codec falls back to it for every error, and the property tests
// check that both give the same values and bytes.
import type { Reader, Writer } from "./binary.js"

/**
 * An annotation on a Schema refinement: the same check as the refinement's filter, as a JavaScript
 * expression over `v` (which has passed the refinement's `from` already). The compiled validator
 * (validator.ts) inlines it instead of calling the filter through Effect's wrappers, about 15 ns a
 * field. The validator's property tests hold both to the same answers.
 */
export const InlineCheck: unique symbol = Symbol.for("@hotstuff2/wire/InlineCheck")
export type InlineCheck = (v: string) => string

/** Builds the source of one compiled unit: values it refers to, and function declarations. */
export class Gen {
  private readonly refs: Array<unknown> = []
  private readonly decls: Array<string> = []

  /** A name for `value` inside the generated code. */
  ref(value: unknown): string {
    let i = this.refs.indexOf(value)
    if (i < 0) {
      i = this.refs.length
      this.refs.push(value)
    }
    return `k${i}`
  }

  /** Declares a function and returns its name. */
  fn(params: string, body: string): string {
    const name = `f${this.decls.length}`
    this.decls.push(`function ${name}(${params}) {\n${body}\n}`)
    return name
  }

  /** Evaluates the declarations and returns the value of `result` (an expression over them). */
  build<T>(result: string): T {
    const consts = this.refs.map((_, i) => `const k${i} = refs[${i}];`).join("\n")
    const source = `"use strict";\n${consts}\n${this.decls.join("\n")}\nreturn ${result};`
    // Source built only from our own field definitions and Schema ASTs, never from input.
    return new Function("refs", source)(this.refs) as T
  }
}

/**
 * How a field compiles. Expressions may repeat `v`, so callers pass an identifier or a property
 * access; the reader is always `r` and the writer `w` in the generated code.
 */
export interface Emitter {
  /** An expression reading the value, failing exactly when the field's `read` fails. */
  readonly read: (g: Gen) => string
  /** The encoded size when it is the same for every value. */
  readonly fixedSize?: number | undefined
  /** An expression: the encoded size of `v`. */
  readonly size: (g: Gen, v: string) => string
  /** Statements writing `v`. */
  readonly write: (g: Gen, v: string) => string
  /**
   * An expression checking what `read` does not guarantee by construction (a certificate's signer
   * count), or undefined when every value `read` returns satisfies the field's Schema.
   */
  readonly residual: (g: Gen, v: string) => string | undefined
}

/** The compiled form of one message type (without its type byte). */
export interface CompiledMessage {
  readonly read: (r: Reader) => unknown
  readonly size: (value: unknown) => number
  readonly write: (w: Writer, value: unknown) => void
  /** True when a value `read` returned satisfies the Schema (the checks `read` cannot imply). */
  readonly residual: (value: unknown) => boolean
}

export const compileMessage = (emit: Emitter): CompiledMessage => {
  const g = new Gen()
  const read = g.fn("r", `return ${emit.read(g)};`)
  const size = g.fn("v", `return ${emit.size(g, "v")};`)
  const write = g.fn("w, v", emit.write(g, "v"))
  const check = emit.residual(g, "v")
  const residual = g.fn("v", `return ${check ?? "true"};`)
  return g.build(`{ read: ${read}, size: ${size}, write: ${write}, residual: ${residual} }`)
}
