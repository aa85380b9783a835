// The application-level handshake every transport runs on the control channel, and the goodbye.
//
//   both sides:  Hello { version, networkId, peer, nonce (32 random bytes), timestamp (ms) }
//   dialer:      Auth  { signature over DOMAIN | networkId | role "dialer"   | dialer Hello | listener Hello }
//   listener:    verifies it, asks `authorize`, then
//                Auth  { signature over DOMAIN | networkId | role "listener" | dialer Hello | listener Hello }
//   refusal:     Goodbye { reason, detail } instead, then close
//
// Each side checks the remote Hello (version, network, expected or pinned key, not its own key or
// nonce, clock skew, a nonce never seen). The listener verifies the dialer's Auth before it asks
// `authorize`, so admission is decided on a proven identity, never a claimed one. Each signature
// covers the other side's fresh nonce and names the signer's role, so a recorded handshake cannot be
// replayed and one side's messages cannot be reflected back to it as the other side's. Over plain
// TCP the signatures are what authenticates the peer. Under TLS the certificate already proved the
// key and the channel protects the hellos, so signatures are optional there; in TLS 1.3 the
// listener's Auth (or Goodbye) is also the acknowledgement the dialer needs, since its
// `secureConnect` fires before the server has judged the client's certificate.
//
// The dialer completes on the listener's Auth synchronously, in the data handler: the listener's
// first frames may follow its Auth in the same read, and must find the connection open.
import * as crypto from "node:crypto"
import { Identity } from "@hotstuff2/wire"
import * as Data from "effect/Data"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as FiberId from "effect/FiberId"
import * as Runtime from "effect/Runtime"
import { type Authorize, describeExpected, type Expected, expects, type PeerId } from "../Transport.js"
import type { HandshakeFailure } from "../TransportError.js"
import type { ConnectionCore } from "./connection.js"

export const PROTOCOL_VERSION = 1
const HELLO = 0x01
const AUTH = 0x02
const GOODBYE = 0x03
const NONCE_BYTES = 32
const DOMAIN = Buffer.from("hotstuff2/handshake/v1/", "latin1")

export class HandshakeError extends Data.TaggedError("HandshakeError")<{
  readonly reason: HandshakeFailure
  readonly detail: string
  readonly peer?: PeerId | undefined
}> {}

export interface Hello {
  readonly version: number
  readonly networkId: string
  readonly peer: PeerId
  readonly nonce: string
  readonly timestamp: number
}

export const encodeHello = (h: Hello): Uint8Array => {
  const network = Buffer.from(h.networkId, "utf8")
  const out = Buffer.allocUnsafe(3 + network.length + 32 + NONCE_BYTES + 8)
  let at = 0
  out[at++] = HELLO
  out[at++] = h.version
  out[at++] = network.length
  at += network.copy(out, at)
  at += out.write(h.peer, at, 32, "hex")
  at += out.write(h.nonce, at, NONCE_BYTES, "hex")
  out.writeBigUInt64BE(BigInt(h.timestamp), at)
  return out
}

export const decodeHello = (bytes: Uint8Array): Hello | undefined => {
  const buf = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength)
  if (buf.length < 3 || buf[0] !== HELLO) return undefined
  const networkLength = buf[2]!
  if (buf.length !== 3 + networkLength + 32 + NONCE_BYTES + 8) return undefined
  let at = 3
  const networkId = buf.toString("utf8", at, at + networkLength)
  at += networkLength
  const peer = buf.toString("hex", at, at + 32) as PeerId
  at += 32
  const nonce = buf.toString("hex", at, at + NONCE_BYTES)
  at += NONCE_BYTES
  const timestamp = buf.readBigUInt64BE(at)
  if (timestamp > BigInt(Number.MAX_SAFE_INTEGER)) return undefined
  return { version: buf[1]!, networkId, peer, nonce, timestamp: Number(timestamp) }
}

export const encodeGoodbye = (reason: string, detail: string): Uint8Array => {
  const r = Buffer.from(reason.slice(0, 64), "utf8")
  const d = Buffer.from(detail.slice(0, 512), "utf8")
  const out = Buffer.allocUnsafe(4 + r.length + d.length)
  out[0] = GOODBYE
  out[1] = r.length
  r.copy(out, 2)
  out.writeUInt16BE(d.length, 2 + r.length)
  d.copy(out, 4 + r.length)
  return out
}

export const decodeGoodbye = (bytes: Uint8Array): { reason: string; detail: string } | undefined => {
  const buf = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength)
  if (buf.length < 4 || buf[0] !== GOODBYE) return undefined
  const rl = buf[1]!
  if (buf.length < 4 + rl) return undefined
  const dl = buf.readUInt16BE(2 + rl)
  if (buf.length !== 4 + rl + dl) return undefined
  return { reason: buf.toString("utf8", 2, 2 + rl), detail: buf.toString("utf8", 4 + rl, 4 + rl + dl) }
}

/** What a side signs: its role and both hellos, dialer's first (hellos are self-delimiting). */
export const transcript = (
  networkId: string,
  role: "dialer" | "listener",
  dialerHello: Uint8Array,
  listenerHello: Uint8Array
): Uint8Array =>
  Buffer.concat([
    DOMAIN,
    Buffer.from(networkId, "utf8"),
    Buffer.from([0, role === "dialer" ? 1 : 2]),
    dialerHello,
    listenerHello
  ])

/** Nonces seen within the clock-skew window: a hello is accepted once. Bounded. */
export class ReplayCache {
  private readonly seen = new Map<string, number>()
  constructor(private readonly capacity = 65_536) {}

  /** Records the nonce; false if it was seen before. Expired nonces are dropped as it goes. */
  add(nonce: string, now: number, windowMillis: number): boolean {
    // Insertion order is expiry order (one window for all): expired entries are at the front.
    for (const [key, expiry] of this.seen) {
      if (expiry > now && this.seen.size < this.capacity) break
      this.seen.delete(key)
    }
    if (this.seen.has(nonce)) return false
    this.seen.set(nonce, now + 2 * windowMillis)
    return true
  }
}

export interface HandshakeOptions {
  readonly identity: Identity.Identity
  readonly networkId: string
  readonly role: "dialer" | "listener"
  /** Dialer: the key the remote must have, or the keys it may have. */
  readonly expected?: Expected | undefined
  /** TLS: the key the remote's certificate proved; its Hello must name the same. */
  readonly pinnedPeer?: PeerId | undefined
  /** Listener: admission. */
  readonly authorize?: Authorize | undefined
  readonly signatures: boolean
  readonly maxClockSkew: Duration.Duration
  readonly replay: ReplayCache
}

/** Control messages once open: a goodbye says why the remote closes; anything else is a violation. */
const afterHandshake =
  (core: ConnectionCore) =>
  (message: Uint8Array): void => {
    const goodbye = decodeGoodbye(message)
    if (goodbye === undefined) core.protocolError("unexpected control message")
    else core.remoteClosing(goodbye.reason, goodbye.detail)
  }

const failure = (reason: HandshakeFailure, detail: string, peer?: PeerId) =>
  new HandshakeError({ reason, detail, peer })

/** Runs an admission Effect and calls back with its outcome; returns a function that interrupts it. */
export type RunAuthorize = (
  effect: Effect.Effect<boolean>,
  done: (exit: Exit.Exit<boolean>) => void
) => () => void

/** The handshake's outcome: the authenticated peer, or why it failed. */
export type HandshakeResult = PeerId | HandshakeError

/**
 * Starts the handshake on a core in state "handshake", as plain callbacks on the core's (a
 * connection setup costs no fiber of its own). `done` is called once: on success the core is open
 * and knows its remote peer; on failure the remote has been told why (when it got that far) and the
 * core is closing or destroyed. The caller bounds it in time (with the TLS handshake before it); the
 * returned cancel stops it without calling `done` (the caller then cuts the core).
 */
export const start = (
  core: ConnectionCore,
  options: HandshakeOptions,
  now: () => number,
  runAuthorize: RunAuthorize,
  done: (result: HandshakeResult) => void
): (() => void) => {
  const { identity, networkId, role } = options
  const inbox: Array<Uint8Array> = []
  let finished = false
  /** What to do with the next control message, once it is there; undefined while none is awaited. */
  let onMessage: ((message: Uint8Array) => void) | undefined
  let cancelAuthorize: (() => void) | undefined
  let unsubscribe: () => void = () => {}

  const settle = (result: HandshakeResult) => {
    if (finished) return
    finished = true
    onMessage = undefined
    unsubscribe()
    if (result instanceof HandshakeError && core.state !== "closing") {
      core.destroy("handshake", "handshake failed")
    }
    done(result)
  }
  const closedFailure = () => {
    const why = core.closeReason
    return why?.reason === "protocol-error"
      ? failure("protocol", why.detail)
      : failure("closed", why ? `${why.reason}: ${why.detail}` : "closed during the handshake")
  }
  /** Hands the next queued message to `f` (a goodbye fails), now or when it arrives. */
  const next = (f: (message: Uint8Array) => void) => {
    const message = inbox.shift()
    if (message !== undefined) {
      const goodbye = decodeGoodbye(message)
      if (goodbye !== undefined) settle(failure("refused-by-remote", `${goodbye.reason}: ${goodbye.detail}`))
      else f(message)
    } else if (core.state === "closed") settle(closedFailure())
    else onMessage = f
  }
  core.onControl = (message) => {
    if (inbox.length >= 4) return core.protocolError("too many control frames during the handshake")
    inbox.push(message)
    const f = onMessage
    if (f !== undefined) {
      onMessage = undefined
      next(f)
    }
  }
  unsubscribe = core.onClosed(() => {
    if (onMessage !== undefined) settle(closedFailure())
  })

  const nonce = crypto.randomBytes(NONCE_BYTES).toString("hex")
  const ownHello = encodeHello({
    version: PROTOCOL_VERSION,
    networkId,
    peer: identity.peerId,
    nonce,
    // Whole milliseconds: a TestClock driven by jittered schedules reads fractions.
    timestamp: Math.floor(now())
  })
  core.sendControl(ownHello)

  const onHello = (remoteHello: Uint8Array) => {
    const hello = decodeHello(remoteHello)
    if (hello === undefined) return settle(failure("protocol", "expected a Hello"))
    // Only a key the certificate proved, or a verified signature, may name the peer in a refusal.
    let verified = options.pinnedPeer !== undefined
    const refuse = (reason: HandshakeFailure, detail: string) => {
      core.close("handshake", `${reason}: ${detail}`, encodeGoodbye(reason, detail))
      settle(failure(reason, detail, verified ? hello.peer : undefined))
    }
    if (hello.version !== PROTOCOL_VERSION) {
      return refuse("version", `protocol version ${hello.version}, expected ${PROTOCOL_VERSION}`)
    }
    if (hello.networkId !== networkId) {
      // The remote's id, escaped and cut short: it is the peer's bytes, going into a goodbye and a log.
      return refuse(
        "wrong-network",
        `network ${JSON.stringify(hello.networkId.slice(0, 64))}, expected "${networkId}"`
      )
    }
    if (hello.peer === identity.peerId || hello.nonce === nonce) {
      return refuse("identity-mismatch", "the remote presents this node's own key or nonce")
    }
    if (options.pinnedPeer !== undefined && hello.peer !== options.pinnedPeer) {
      return refuse(
        "identity-mismatch",
        `hello names ${hello.peer.slice(0, 16)}, certificate proves ${options.pinnedPeer.slice(0, 16)}`
      )
    }
    if (options.expected !== undefined && !expects(options.expected, hello.peer)) {
      return refuse(
        "identity-mismatch",
        `remote is ${hello.peer.slice(0, 16)}, expected ${describeExpected(options.expected).slice(0, 16)}`
      )
    }
    const skew = Duration.toMillis(options.maxClockSkew)
    const checkedAt = now()
    if (Math.abs(hello.timestamp - checkedAt) > skew) {
      return refuse(
        "stale-hello",
        `hello timestamp is ${hello.timestamp - checkedAt} ms from this node's clock (max ${skew})`
      )
    }
    if (!options.replay.add(hello.nonce, checkedAt, skew)) {
      return refuse("replayed-hello", "hello nonce seen before")
    }

    const dialerHello = role === "dialer" ? ownHello : remoteHello
    const listenerHello = role === "dialer" ? remoteHello : ownHello
    const auth = () => {
      const signature = options.signatures
        ? Identity.sign(identity, transcript(networkId, role, dialerHello, listenerHello))
        : new Uint8Array(64)
      const out = Buffer.allocUnsafe(65)
      out[0] = AUTH
      out.set(signature, 1)
      return out
    }
    const remoteRole = role === "dialer" ? "listener" : "dialer"
    const authentic = (message: Uint8Array) =>
      message.length === 65 &&
      message[0] === AUTH &&
      (!options.signatures ||
        Identity.verify(
          hello.peer,
          transcript(networkId, remoteRole, dialerHello, listenerHello),
          message.subarray(1)
        ))
    const open = () => {
      core.open(hello.peer)
      // Made outside this closure: one made here would keep the whole handshake alive for as long
      // as the connection.
      core.onControl = afterHandshake(core)
      settle(hello.peer)
    }

    if (role === "listener") {
      return next((dialerAuth) => {
        if (!authentic(dialerAuth)) return refuse("bad-signature", "handshake signature does not verify")
        verified = true
        const admitted = () => {
          if (core.state !== "handshake") return settle(closedFailure())
          core.sendControl(auth())
          open()
        }
        if (options.authorize === undefined) return admitted()
        const authorize = options.authorize
        // Suspended: this runs in a socket's data handler, where a throw in `authorize` would
        // otherwise escape as an uncaught exception and end the process.
        cancelAuthorize = runAuthorize(
          Effect.suspend(() => authorize(hello.peer, core.remoteAddress)),
          (exit) => {
            cancelAuthorize = undefined
            if (finished) return
            if (Exit.isSuccess(exit)) {
              if (exit.value) admitted()
              else refuse("not-admitted", "peer not admitted by this node")
            } else if (Exit.isInterrupted(exit)) settle(failure("closed", "admission interrupted"))
            else refuse("not-admitted", "admission failed on this node")
          }
        )
      })
    }

    // Dialer: be ready for the listener's Auth, and whatever follows it in the same read, first.
    const pending = inbox.shift()
    if (pending !== undefined) {
      // Only a goodbye can come before this side's Auth.
      const goodbye = decodeGoodbye(pending)
      return goodbye
        ? settle(failure("refused-by-remote", `${goodbye.reason}: ${goodbye.detail}`))
        : refuse("protocol", "the listener's Auth came before this side's")
    }
    core.onControl = (message) => {
      if (finished) return
      const goodbye = decodeGoodbye(message)
      if (goodbye !== undefined) {
        settle(failure("refused-by-remote", `${goodbye.reason}: ${goodbye.detail}`))
      } else if (!authentic(message)) {
        refuse("bad-signature", "handshake signature does not verify")
      } else if (core.state !== "handshake") {
        settle(closedFailure())
      } else {
        verified = true
        open()
      }
    }
    // A close now fails the handshake, as while a message is awaited.
    onMessage = () => {}
    core.sendControl(auth())
  }
  next(onHello)

  return () => {
    if (finished) return
    finished = true
    onMessage = undefined
    unsubscribe()
    cancelAuthorize?.()
  }
}

/**
 * The handshake as an Effect (for callers that are fibers already): `start` under one
 * `Effect.async`; interrupting it stops the handshake and leaves the core to the caller.
 */
export const run = (core: ConnectionCore, options: HandshakeOptions): Effect.Effect<PeerId, HandshakeError> =>
  Effect.flatMap(Effect.zip(Effect.runtime<never>(), Effect.clock), ([runtime, clock]) =>
    Effect.async<PeerId, HandshakeError>((resume) => {
      const runAuthorize: RunAuthorize = (effect, onExit) => {
        const fiber = Runtime.runFork(runtime)(effect)
        fiber.addObserver(onExit)
        return () => fiber.unsafeInterruptAsFork(FiberId.none)
      }
      const cancel = start(
        core,
        options,
        () => clock.unsafeCurrentTimeMillis(),
        runAuthorize,
        (result) => resume(result instanceof HandshakeError ? Effect.fail(result) : Effect.succeed(result))
      )
      return Effect.sync(cancel)
    })
  )
