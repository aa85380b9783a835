// Codec benchmark: encode and decode+validate rates for a Vote, a 1 KiB and a 64 KiB Proposal, with
// JSON.stringify/JSON.parse of the same messages as the in-run baseline; Ed25519 sign and verify.
import * as crypto from "node:crypto"
import * as zlib from "node:zlib"
import { Bench } from "@hotstuff2/testing"
import * as Either from "effect/Either"
import * as Option from "effect/Option"
import { Codec, Envelope, Frame, Identity, Message } from "../src/index.js"

Bench.resultsOnStdout()

const { machine, measure, report } = Bench

const identity = Either.getOrThrow(Identity.fromSeed(new Uint8Array(32).fill(7)))
const bytes = (n: number) => new Uint8Array(crypto.randomBytes(n))

const qc = (signers: number): Message.QuorumCertificate =>
  Message.QuorumCertificate.make({
    view: 41n,
    blockHash: bytes(32),
    signers: Uint8Array.from({ length: Math.ceil(signers / 8) }, (_, i) =>
      i < Math.floor(signers / 8) ? 0xff : (1 << (signers % 8)) - 1
    ),
    signatures: Array.from({ length: signers }, () => bytes(64))
  })

const vote = Message.Vote.make({
  view: 42n,
  blockHash: bytes(32),
  voter: identity.peerId,
  signature: bytes(64)
})
const proposal = (payload: number): Message.Proposal =>
  Message.Proposal.make({
    view: 42n,
    block: { hash: bytes(32), parent: bytes(32), height: 1_000_000n, payload: bytes(payload) },
    justify: qc(3),
    proposer: identity.peerId,
    signature: bytes(64)
  })

// The JSON baseline gets the friendliest form JSON allows: bytes as base64, big integers as strings.
const toJson = (value: unknown): unknown => {
  if (value instanceof Uint8Array) return Buffer.from(value).toString("base64")
  if (typeof value === "bigint") return value.toString()
  if (Array.isArray(value)) return value.map(toJson)
  if (Option.isOption(value)) return Option.getOrNull(Option.map(value, toJson))
  if (value !== null && typeof value === "object") {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, toJson(v)]))
  }
  return value
}

const info = machine()
const cases: ReadonlyArray<readonly [string, Message.Message]> = [
  ["Vote", vote],
  ["Proposal 1KiB", proposal(1024)],
  ["Proposal 64KiB", proposal(64 * 1024)]
]
for (const [name, message] of cases) {
  const encoded = Either.getOrThrow(Codec.encode(message))
  const json = toJson(message)
  const text = JSON.stringify(json)
  const batch = name.includes("64KiB") ? 20 : 1000
  const opts = { batch }
  const size = { wireBytes: encoded.length, jsonBytes: Buffer.byteLength(text) }
  let sink = 0
  const encodeRate = measure(() => {
    sink += Either.getOrThrow(Codec.encode(message)).length
  }, opts)
  report({ bench: "wire", case: `encode ${name}`, ...encodeRate, ...size, ...info })
  const decodeRate = measure(() => {
    if (Either.isLeft(Codec.decode(encoded))) throw new Error("decode failed")
  }, opts)
  report({ bench: "wire", case: `decode+validate ${name}`, ...decodeRate, ...size, ...info })
  const stringifyRate = measure(() => {
    sink += JSON.stringify(json).length
  }, opts)
  report({ bench: "wire", case: `baseline JSON.stringify ${name}`, ...stringifyRate, ...size, ...info })
  const parseRate = measure(() => {
    sink += JSON.parse(text) === null ? 1 : 0
  }, opts)
  report({ bench: "wire", case: `baseline JSON.parse ${name}`, ...parseRate, ...size, ...info })
  // What a connection pays per `encodeLater` message to check it again when it builds the frame.
  const later = Either.getOrThrow(Codec.encodeLater(undefined, message))
  const verifyRate = measure(() => {
    if (later.verify?.() !== true) throw new Error("verify failed")
  }, opts)
  report({ bench: "wire", case: `encodeLater verify ${name}`, ...verifyRate, ...size, ...info })
  if (sink < 0) console.log(sink)
}

// Inflating a large compressed body in place: what a connection would stall for without inflating
// large bodies off the event loop (Frame.DecoderOptions.asyncInflateAbove).
{
  const raw = Buffer.alloc(64 * 1024 * 1024, 7)
  const deflated = zlib.deflateRawSync(raw, { level: 1 })
  const started = process.hrtime.bigint()
  const inflated = zlib.inflateRawSync(deflated, { maxOutputLength: raw.length })
  const millis = Number(process.hrtime.bigint() - started) / 1e6
  report({
    bench: "wire",
    case: "inflate 64 MiB in place (one call)",
    millis: Math.round(millis),
    inflatedBytes: inflated.length,
    wireBytes: deflated.length,
    ...info
  })
}

// A frame of 64 votes through the incremental decoder: the per-connection inbound path.
const voteBytes = Either.getOrThrow(Codec.encode(vote))
const frame = Either.getOrThrow(Frame.encode({ channel: 1, messages: new Array(64).fill(voteBytes) }))
const decoder = new Frame.FrameDecoder()
let frames = 0
const frameRate = measure(
  () => {
    decoder.push(frame, () => frames++)
  },
  { batch: 100 }
)
report({
  bench: "wire",
  case: "frame decode 64 votes/frame",
  ...frameRate,
  msgsPerSec: frameRate.opsPerSec * 64,
  frameBytes: frame.length,
  ...info
})

// Ed25519 with cached KeyObjects, and a whole envelope seal and open.
const signed = Identity.sign(identity, voteBytes)
report({
  bench: "wire",
  case: "ed25519 sign",
  ...measure(() => Identity.sign(identity, voteBytes), { batch: 50, rounds: 5 }),
  ...info
})
report({
  bench: "wire",
  case: "ed25519 verify",
  ...measure(() => Identity.verify(identity.peerId, voteBytes, signed), { batch: 50, rounds: 5 }),
  ...info
})
const sealed = Either.getOrThrow(
  Envelope.seal(identity, { networkId: "bench", sequence: 1n, payload: voteBytes })
)
report({
  bench: "wire",
  case: "envelope seal (Vote)",
  ...measure(() => Envelope.seal(identity, { networkId: "bench", sequence: 1n, payload: voteBytes }), {
    batch: 50,
    rounds: 5
  }),
  ...info
})
report({
  bench: "wire",
  case: "envelope open (verify + decode Vote)",
  ...measure(() => Envelope.open(sealed.bytes, "bench"), { batch: 50, rounds: 5 }),
  ...info
})
