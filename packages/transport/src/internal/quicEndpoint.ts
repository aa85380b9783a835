// QUIC connections on @matrixai/quic's native quiche binding, driven directly. The package's own
// QUICServer/QUICConnection/QUICStream wrap every packet in promises, an async lock with an
// AbortSignal and a timer, and every stream read in a web stream of 4 KiB chunks: that wrapper,
// not quiche, held the naive probe to 3-19 Mbit/s (profiled: most CPU in processStreams, lock
// signals, thrown-and-caught errors and GC). Here a UDP socket feeds quiche synchronously in its
// 'message' callback; stream data is read and written in whole buffers; one timer per connection
// serves quiche's own deadline (loss recovery, ACK delay, idle), and is re-armed only when it moves
// earlier. quiche's timers are protocol timers on real time (it reads the monotonic clock itself),
// so this backend, like TLS, runs under the live clock only.
import * as crypto from "node:crypto"
import * as dgram from "node:dgram"
import type { Config, Connection, Host as HostPort } from "@matrixai/quic/native/types.js"

export type Quiche = typeof import("@matrixai/quic/native/quiche.js").default

/** Loads the native binding (a prebuilt package per platform); undefined with why when it cannot. */
export const loadQuiche = (): Promise<Quiche> =>
  import("@matrixai/quic/native/quiche.js").then((m) => m.default)

export interface QuicSettings {
  /** The identity's certificate and key, PEM. */
  readonly certPem: string
  readonly keyPem: string
  /** Largest UDP payload sent and accepted (1350 is safe on any path MTU of 1400 or more). */
  readonly maxUdpPayloadBytes: number
  /** Flow-control windows: per stream and per connection (bytes a peer may send unread). */
  readonly streamWindow: number
  readonly connectionWindow: number
  /** Streams a peer may open (one per channel it uses, and the control channel). */
  readonly maxStreams: number
  /** quiche closes a connection that heard nothing for this long. */
  readonly idleTimeoutMillis: number
  /** UDP socket buffers (Linux caps them at net.core.rmem_max / wmem_max). */
  readonly socketBufferBytes: number
}

const ALPN = ["hotstuff2"]
const CID_BYTES = 20

export const buildConfig = (quiche: Quiche, settings: QuicSettings): Config => {
  // verifyPeer: ask for (server) and check (client) a certificate; verifyAllowFail: a self-signed
  // one is not refused by BoringSSL, the key is pinned by the transport after the handshake.
  const config = quiche.Config.withBoringSslCtx(
    true,
    true,
    null,
    [Buffer.from(settings.keyPem)],
    [Buffer.from(settings.certPem)],
    "ed25519"
  )
  config.grease(true)
  config.setMaxIdleTimeout(settings.idleTimeoutMillis)
  config.setMaxRecvUdpPayloadSize(settings.maxUdpPayloadBytes)
  config.setMaxSendUdpPayloadSize(settings.maxUdpPayloadBytes)
  config.setInitialMaxData(settings.connectionWindow)
  config.setInitialMaxStreamDataBidiLocal(settings.streamWindow)
  config.setInitialMaxStreamDataBidiRemote(settings.streamWindow)
  config.setInitialMaxStreamDataUni(settings.streamWindow)
  config.setInitialMaxStreamsBidi(0)
  config.setInitialMaxStreamsUni(settings.maxStreams)
  config.setMaxStreamWindow(settings.streamWindow)
  config.setMaxConnectionWindow(settings.connectionWindow)
  config.setDisableActiveMigration(true)
  config.setApplicationProtos(ALPN)
  config.enableDgram(false, 0, 0)
  return config
}

/** What a driven connection tells its owner (the pipe). */
export interface QuicEvents {
  /** The TLS handshake is complete; the peer's certificate chain (DER) is readable. */
  established: () => void
  /** After quiche processed inbound packets or a timeout: streams may be readable or writable. */
  progress: () => void
  /** The connection is closed (by either side, an idle timeout, or a local close). */
  closed: (why: string | undefined) => void
}

/**
 * Packets sent in one go before the event loop gets a turn (quiche's pacing times are not
 * followed: no timer here is that fine). Measured on loopback, 64 KiB one-way: 32 gave ~110,
 * 64 ~310, 128 ~570, unbounded ~290 Mbit/s (its bursts overflowed the receiver's socket buffer).
 */
const BURST = 128

const noEvents: QuicEvents = { established: () => {}, progress: () => {}, closed: () => {} }

/** One QUIC connection on a UDP socket: feeds it packets, flushes what it has to send, keeps its timer. */
export class DrivenConnection {
  events: QuicEvents = noEvents
  private timer: ReturnType<typeof setTimeout> | undefined
  private timerAt = Number.POSITIVE_INFINITY
  private wasEstablished = false
  private done = false
  private slab: Buffer = Buffer.allocUnsafe(0)
  private slabUsed = 0
  private readonly recvInfo: { from: HostPort; to: HostPort }

  constructor(
    readonly conn: Connection,
    private readonly socket: dgram.Socket,
    readonly remote: HostPort,
    local: HostPort,
    private readonly maxPayload: number,
    private readonly onGone: () => void,
    /** A dialer's socket is connected to its one peer (so ICMP errors reach it): sends name no address. */
    private readonly connected = false
  ) {
    this.recvInfo = { from: remote, to: local }
  }

  get isClosed(): boolean {
    return this.done
  }

  /**
   * A datagram for this connection. quiche takes it at once; streams are served and packets sent
   * once per batch, after every datagram the socket had ready (setImmediate runs after the poll
   * phase): one read, one flush and one ACK for a burst of packets instead of one per packet
   * (measured: this and the skipped stream scan below doubled one-way throughput).
   */
  receive(data: Buffer): void {
    if (this.done) return
    try {
      this.conn.recv(data, this.recvInfo)
    } catch {
      // quiche refused the packet (garbage, or a TLS failure it now closes the connection for):
      // nothing to do but flush the close it may have queued and check its state.
    }
    if (this.serviceScheduled) return
    this.serviceScheduled = true
    setImmediate(this.service)
  }

  private serviceScheduled = false
  private readonly service = (): void => {
    this.serviceScheduled = false
    if (!this.done) this.afterInput()
  }

  private afterInput(): void {
    if (!this.wasEstablished && this.conn.isEstablished()) {
      this.wasEstablished = true
      this.events.established()
    }
    if (!this.done && this.wasEstablished) this.events.progress()
    this.flush()
  }

  /** Sends every packet quiche has ready, then re-arms the timer. */
  flush(): void {
    if (this.done) return
    const max = this.maxPayload
    for (let packets = 0; ; packets++) {
      if (packets === BURST) {
        // The rest after the ACKs that came meanwhile: a whole congestion window sent at once
        // overflows the receiver's socket buffer (seen: 2.6% loss, and the window cut for it).
        if (!this.serviceScheduled) {
          this.serviceScheduled = true
          setImmediate(this.service)
        }
        return
      }
      if (this.slab.length - this.slabUsed < max) {
        // Packets are carved from 256 KiB slabs: dgram keeps each buffer until it is sent.
        this.slab = Buffer.allocUnsafe(Math.max(256 * 1024, max))
        this.slabUsed = 0
      }
      const out = this.slab.subarray(this.slabUsed, this.slabUsed + max)
      let result: ReturnType<Connection["send"]>
      try {
        result = this.conn.send(out)
      } catch {
        break
      }
      if (result === null) break
      const [length, info] = result
      this.slabUsed += length
      try {
        if (this.connected) this.socket.send(out.subarray(0, length))
        else this.socket.send(out.subarray(0, length), info.to.port, info.to.host)
      } catch {
        // A closed socket: the connection is going away with it.
      }
    }
    if (this.conn.isClosed()) {
      this.finish()
      return
    }
    this.arm()
  }

  private arm(): void {
    const timeout = this.conn.timeout()
    if (timeout === null) {
      if (this.timer !== undefined) clearTimeout(this.timer)
      this.timer = undefined
      this.timerAt = Number.POSITIVE_INFINITY
      return
    }
    const at = performance.now() + timeout
    if (this.timer !== undefined && at >= this.timerAt - 0.5) return
    if (this.timer !== undefined) clearTimeout(this.timer)
    this.timerAt = at
    this.timer = setTimeout(this.onTimer, Math.max(0, Math.ceil(timeout)))
    this.timer.unref?.()
  }

  private readonly onTimer = (): void => {
    this.timer = undefined
    this.timerAt = Number.POSITIVE_INFINITY
    if (this.done) return
    this.conn.onTimeout()
    this.afterInput()
  }

  /** Closes with an application code; the close packet is flushed at once. */
  close(code: number, reason: string): void {
    if (this.done) return
    try {
      this.conn.close(true, code, Buffer.from(reason.slice(0, 200)))
    } catch {
      // already closing
    }
    this.flush()
    // Don't wait out the draining period: nothing more is read from this peer.
    this.finish()
  }

  private finish(): void {
    if (this.done) return
    this.done = true
    if (this.timer !== undefined) clearTimeout(this.timer)
    this.timer = undefined
    const peer = this.conn.peerError()
    const local = this.conn.localError()
    const error = peer ?? local
    const why =
      error === null
        ? this.conn.isTimedOut()
          ? "idle timeout"
          : undefined
        : error.errorCode === 0 && error.isApp
          ? undefined
          : `${peer !== null ? "peer" : "local"} ${error.isApp ? "application" : "transport"} error ${error.errorCode}${error.reason.length > 0 ? `: ${Buffer.from(error.reason).toString("utf8").slice(0, 120)}` : ""}`
    this.onGone()
    this.events.closed(why)
  }
}

export const hostPortOf = (address: string, port: number): HostPort => ({ host: address, port })

/** A UDP socket bound on `host:port`, with large buffers and every 'error' caught. */
export const bindUdp = (host: string, port: number, bufferBytes: number): Promise<dgram.Socket> =>
  new Promise((resolve, reject) => {
    const socket = dgram.createSocket({ type: host.includes(":") ? "udp6" : "udp4" })
    const onError = (error: Error) => {
      socket.close()
      reject(error)
    }
    socket.once("error", onError)
    socket.bind({ address: host, port, exclusive: true }, () => {
      socket.off("error", onError)
      // A socket 'error' without a listener takes the process down: errors reach connections as
      // timeouts (lost packets) instead.
      socket.on("error", () => {})
      try {
        socket.setRecvBufferSize(bufferBytes)
        socket.setSendBufferSize(bufferBytes)
      } catch {
        // not allowed to raise them: the default is used
      }
      resolve(socket)
    })
  })

/** Stateless retry tokens: the server keeps no state for an address until it echoes one. */
export class RetryTokens {
  private readonly key = crypto.randomBytes(32)

  /** A new connection id derived from the client's first one, the same for its retried Initial. */
  connectionId(dcid: Uint8Array): Buffer {
    return crypto.createHmac("sha256", this.key).update("cid").update(dcid).digest().subarray(0, CID_BYTES)
  }

  mint(odcid: Uint8Array, from: HostPort, now: number): Buffer {
    const body = Buffer.alloc(9 + odcid.length)
    body.writeDoubleBE(now, 0)
    body[8] = odcid.length
    body.set(odcid, 9)
    return Buffer.concat([body, this.mac(body, from)])
  }

  /** The original connection id in a token minted for `from` within `maxAgeMillis`, or undefined. */
  check(token: Uint8Array, from: HostPort, now: number, maxAgeMillis: number): Buffer | undefined {
    if (token.length < 9 + 16) return undefined
    const t = Buffer.from(token)
    const length = t[8]!
    if (length > CID_BYTES || t.length !== 9 + length + 16) return undefined
    const body = t.subarray(0, 9 + length)
    if (!crypto.timingSafeEqual(this.mac(body, from), t.subarray(9 + length))) return undefined
    const minted = body.readDoubleBE(0)
    if (!(now - minted <= maxAgeMillis && minted <= now + 1000)) return undefined
    return Buffer.from(body.subarray(9))
  }

  private mac(body: Uint8Array, from: HostPort): Buffer {
    return crypto
      .createHmac("sha256", this.key)
      .update(`${from.host}|${from.port}|`)
      .update(body)
      .digest()
      .subarray(0, 16)
  }
}

export const randomConnectionId = (): Buffer => crypto.randomBytes(CID_BYTES)
export const MAX_CONN_ID_LEN = CID_BYTES
