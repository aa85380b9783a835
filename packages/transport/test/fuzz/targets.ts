// The handshake's decoders of a peer's bytes, as fuzz targets: the Hello (the first control message
// of every connection, read before the peer is authenticated) and the Goodbye (read during the
// handshake and on an open connection). The bounded test (test/fuzz.test.ts) and `npm run fuzz`
// (run.ts) run them through the one engine in @hotstuff2/testing.
import { Fuzz } from "@hotstuff2/testing"
import {
  decodeGoodbye,
  decodeHello,
  encodeGoodbye,
  encodeHello,
  PROTOCOL_VERSION
} from "../../src/internal/handshake.js"
import { HandshakeFailure } from "../../src/TransportError.js"
import { identity } from "../fixtures/identities.js"

const HELLO = 0x01
const AUTH = 0x02
const GOODBYE = 0x03
const HEX_64 = /^[0-9a-f]{64}$/

const pick = <A>(random: Fuzz.Random, xs: ReadonlyArray<A>): A => xs[Fuzz.int(random, xs.length)]!
const hexOf = (bytes: Uint8Array) =>
  Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString("hex")
/** Whether `text` is what these bytes decode to as UTF-8 without replacement: it round-trips. */
const isUtf8Of = (text: string, bytes: Uint8Array) => hexOf(Buffer.from(text, "utf8")) === hexOf(bytes)

// ---- hello ----

const networks = ["hotstuff2-devnet", "", "a", "x".repeat(64), "zürich/🚀", "n".repeat(255)]
const timestamps = [0, 1_764_000_000_000, Number.MAX_SAFE_INTEGER]

export const helloSeeds: ReadonlyArray<Uint8Array> = networks.flatMap((networkId, i) =>
  timestamps.map((timestamp, j) =>
    encodeHello({
      version: [PROTOCOL_VERSION, 0, 255][(i + j) % 3]!,
      networkId,
      peer: identity(i).peerId,
      nonce: Buffer.alloc(32, i * 3 + j).toString("hex"),
      timestamp
    })
  )
)

/** Where a Hello's fixed fields start, given its network id's length byte. */
const helloLength = (networkLength: number) => 3 + networkLength + 32 + 32 + 8

/**
 * `decodeHello`. Labels: "ok", "ok (network id not UTF-8)" (decoded with replacement characters,
 * which never equal this node's network id), "refused" (undefined: the handshake answers "expected a
 * Hello"). Properties: the peer and nonce are 64 lower-case hex digits, the timestamp a safe integer,
 * the version a byte; a Hello whose network id is UTF-8 re-encodes to exactly its bytes.
 */
export const hello: Fuzz.Target = {
  name: "handshake-hello",
  seeds: helloSeeds,
  mutators: [
    // the network id's length byte made to fit the input, so that the fields behind it are read
    (input) => {
      const out = Uint8Array.from(input)
      const length = out.length - helloLength(0)
      if (length >= 0 && length <= 255) out[2] = length
      return out
    },
    // a timestamp at or past the largest safe integer, or at the top of the u64 range
    (input, random) => {
      if (input.length < 8) return input
      const out = Uint8Array.from(input)
      const view = new DataView(out.buffer)
      view.setBigUint64(
        out.length - 8,
        pick(random, [
          2n ** 53n - 1n,
          2n ** 53n,
          2n ** 63n,
          2n ** 64n - 1n,
          BigInt(Fuzz.int(random, 2 ** 30))
        ])
      )
      return out
    },
    (input, random) => {
      const out = Uint8Array.from(input)
      if (out.length > 0) out[0] = pick(random, [HELLO, AUTH, GOODBYE, 0, 0xff])
      return out
    }
  ],
  dictionary: [Uint8Array.of(HELLO, PROTOCOL_VERSION), Uint8Array.of(0xc3, 0xbc), Uint8Array.of(0xff, 0xfe)],
  expected: ["ok", "ok (network id not UTF-8)", "refused"],
  run: (input) => {
    const decoded = decodeHello(input)
    if (decoded === undefined) return { label: "refused" }
    const violation = Fuzz.unmetered(() => {
      if (!HEX_64.test(decoded.peer)) return `peer ${decoded.peer} is not 64 hex digits`
      if (!HEX_64.test(decoded.nonce)) return `nonce ${decoded.nonce} is not 64 hex digits`
      if (!Number.isSafeInteger(decoded.timestamp) || decoded.timestamp < 0)
        return `timestamp ${decoded.timestamp}`
      if (!Number.isInteger(decoded.version) || decoded.version < 0 || decoded.version > 255) {
        return `version ${decoded.version}`
      }
      const network = input.subarray(3, 3 + input[2]!)
      if (!isUtf8Of(decoded.networkId, network)) return undefined
      return hexOf(encodeHello(decoded)) === hexOf(input)
        ? undefined
        : "a decoded Hello re-encodes differently"
    })
    const utf8 = Fuzz.unmetered(() => isUtf8Of(decoded.networkId, input.subarray(3, 3 + input[2]!)))
    return { label: utf8 ? "ok" : "ok (network id not UTF-8)", output: decoded, violation }
  }
}

// ---- goodbye ----

const details = [
  "",
  "peer not admitted by this node",
  "d".repeat(512),
  "détail ✓ 🚀",
  'network "x", expected "y"'
]

export const goodbyeSeeds: ReadonlyArray<Uint8Array> = HandshakeFailure.literals.flatMap((reason, i) => [
  encodeGoodbye(reason, details[i % details.length]!),
  encodeGoodbye(reason, "")
])

/** The encoder cuts its reason at 64 and its detail at 512 characters. */
const REASON_CHARS = 64
const DETAIL_CHARS = 512

/**
 * `decodeGoodbye`. Labels: "ok", "ok (not UTF-8 or longer than an encoder writes)", "refused"
 * (undefined). Properties: the reason and detail are what their length fields say; a Goodbye the
 * encoder could have written (UTF-8, within its lengths) re-encodes to exactly its bytes.
 */
export const goodbye: Fuzz.Target = {
  name: "handshake-goodbye",
  seeds: goodbyeSeeds,
  mutators: [
    // both length fields made to fit the input, at a random split between reason and detail
    (input, random) => {
      if (input.length < 4) return input
      const out = Uint8Array.from(input)
      const reason = Fuzz.int(random, Math.min(255, out.length - 4) + 1)
      out[1] = reason
      new DataView(out.buffer).setUint16(2 + reason, Math.min(0xffff, out.length - 4 - reason))
      return out
    },
    (input, random) => {
      const out = Uint8Array.from(input)
      if (out.length > 0) out[0] = pick(random, [GOODBYE, HELLO, AUTH, 0, 0xff])
      return out
    }
  ],
  dictionary: [
    Uint8Array.of(GOODBYE),
    Uint8Array.of(0xff, 0xff),
    Uint8Array.of(0xe2, 0x9c),
    Uint8Array.of(0xed, 0xa0, 0x80)
  ],
  expected: ["ok", "ok (not UTF-8 or longer than an encoder writes)", "refused"],
  run: (input) => {
    const decoded = decodeGoodbye(input)
    if (decoded === undefined) return { label: "refused" }
    const rl = input[1]!
    const reasonBytes = input.subarray(2, 2 + rl)
    const detailBytes = input.subarray(4 + rl)
    const encodable = Fuzz.unmetered(
      () =>
        isUtf8Of(decoded.reason, reasonBytes) &&
        isUtf8Of(decoded.detail, detailBytes) &&
        decoded.reason.length <= REASON_CHARS &&
        decoded.detail.length <= DETAIL_CHARS
    )
    const violation = Fuzz.unmetered(() => {
      if (detailBytes.length !== new DataView(input.buffer, input.byteOffset).getUint16(2 + rl)) {
        return "the detail is not as long as its length field says"
      }
      if (!encodable) return undefined
      const again = encodeGoodbye(decoded.reason, decoded.detail)
      return hexOf(again) === hexOf(input) ? undefined : "a decoded Goodbye re-encodes differently"
    })
    return {
      label: encodable ? "ok" : "ok (not UTF-8 or longer than an encoder writes)",
      output: decoded,
      violation
    }
  }
}

export const targets: ReadonlyArray<Fuzz.Target> = [hello, goodbye]
