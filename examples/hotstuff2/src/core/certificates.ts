/**
 * Quorum and timeout certificates: the signer bitmap, verification (each quorum certificate checked
 * once, then served from a bounded cache), and the per-view collectors a leader aggregates votes,
 * timeouts and new-view messages in.
 */
import { Identity } from "@hotstuff2/wire"
import { bytesEqual, type Digests, hex } from "./crypto.js"
import type { PeerId, QuorumCertificate, TimeoutCertificate } from "./types.js"

/** Faults tolerated among n validators: f = floor((n - 1) / 3). */
export const faults = (n: number): number => Math.floor((n - 1) / 3)
/** Signatures in a certificate: n - f. */
export const quorum = (n: number): number => n - faults(n)

/** Verified quorum certificates remembered, so that each is checked once. */
export const VERIFIED_CACHE_LIMIT = 1024

/** The validator indices a bitmap names, ascending, or why it names none we accept. */
export const signerIndices = (signers: Uint8Array, n: number): ReadonlyArray<number> | string => {
  const out: Array<number> = []
  for (let byte = 0; byte < signers.length; byte++) {
    const bits = signers[byte]!
    if (bits === 0) continue
    for (let bit = 0; bit < 8; bit++) {
      if ((bits & (1 << bit)) === 0) continue
      const index = byte * 8 + bit
      if (index >= n) return `signer bit ${index} is beyond the ${n} validators`
      out.push(index)
    }
  }
  return out
}

/** The canonical bitmap of ascending validator indices (no trailing zero byte). */
export const signerBitmap = (indices: ReadonlyArray<number>): Uint8Array => {
  if (indices.length === 0) return new Uint8Array(0)
  const out = new Uint8Array((indices[indices.length - 1]! >> 3) + 1)
  for (const i of indices) out[i >> 3]! |= 1 << (i & 7)
  return out
}

/** Checks certificates against a fixed validator set. */
export class Certificates {
  readonly n: number
  readonly quorum: number
  private readonly verified = new Map<string, QuorumCertificate>()

  constructor(
    readonly validators: ReadonlyArray<PeerId>,
    private readonly digests: Digests
  ) {
    this.n = validators.length
    this.quorum = quorum(this.n)
  }

  /** Verified certificates cached (for bounds checks). */
  get cacheSize(): number {
    return this.verified.size
  }

  private checkSignatures(
    what: string,
    signers: Uint8Array,
    signatures: ReadonlyArray<Uint8Array>,
    digest: Uint8Array
  ): string | undefined {
    const indices = signerIndices(signers, this.n)
    if (typeof indices === "string") return `${what}: ${indices}`
    if (indices.length !== signatures.length) {
      return `${what} names ${indices.length} signers but carries ${signatures.length} signatures`
    }
    if (indices.length < this.quorum) {
      return `${what} has ${indices.length} signers, needs ${this.quorum}`
    }
    for (let k = 0; k < indices.length; k++) {
      const signer = this.validators[indices[k]!]!
      if (!Identity.verify(signer, digest, signatures[k]!)) {
        return `${what} signature of validator ${indices[k]} (${Identity.shortPeerId(signer)}) does not verify`
      }
    }
    return undefined
  }

  /**
   * A quorum certificate's verified instance (the cached one if its view and block were verified
   * before, so that a copy with bad signatures is never forwarded), or why it does not verify.
   */
  verifyQC(qc: QuorumCertificate): QuorumCertificate | string {
    const genesis = this.digests.genesisQC
    if (qc.view === 0n) {
      return bytesEqual(qc.blockHash, genesis.blockHash) &&
        qc.signatures.length === 0 &&
        qc.signers.length === 0
        ? genesis
        : "a certificate of view 0 must be the genesis certificate"
    }
    const key = `${qc.view}/${hex(qc.blockHash)}`
    const cached = this.verified.get(key)
    if (cached !== undefined) return cached
    const failure = this.checkSignatures(
      `certificate for view ${qc.view}`,
      qc.signers,
      qc.signatures,
      this.digests.vote(qc.view, qc.blockHash)
    )
    if (failure !== undefined) return failure
    if (this.verified.size >= VERIFIED_CACHE_LIMIT) this.verified.delete(this.verified.keys().next().value!)
    this.verified.set(key, qc)
    return qc
  }

  /** Checks a timeout certificate's signatures (its highQC is checked by the caller), or says why not. */
  verifyTCSignatures(tc: TimeoutCertificate): string | undefined {
    return this.checkSignatures(
      `timeout certificate for view ${tc.view}`,
      tc.signers,
      tc.signatures,
      this.digests.timeout(tc.view)
    )
  }
}

/**
 * Messages for a view from each validator at most once, kept only for views within a window the
 * owner moves with `prune`; so it holds at most (window views) * n entries whatever peers send.
 */
export class ViewCollector<A> {
  private readonly byView = new Map<bigint, Map<number, A>>()

  /** `undefined` when added, else the entry this validator already has for the view. */
  add(view: bigint, index: number, value: A): A | undefined {
    let entries = this.byView.get(view)
    if (entries === undefined) {
      entries = new Map()
      this.byView.set(view, entries)
    }
    const existing = entries.get(index)
    if (existing !== undefined) return existing
    entries.set(index, value)
    return undefined
  }

  /** Entries for a view in validator index order. */
  entries(view: bigint): ReadonlyArray<readonly [number, A]> {
    const entries = this.byView.get(view)
    if (entries === undefined) return []
    return [...entries].sort((a, b) => a[0] - b[0])
  }

  count(view: bigint): number {
    return this.byView.get(view)?.size ?? 0
  }

  has(view: bigint, index: number): boolean {
    return this.byView.get(view)?.has(index) ?? false
  }

  /** Forgets every view outside [low, high]. */
  prune(low: bigint, high: bigint): void {
    for (const view of this.byView.keys()) if (view < low || view > high) this.byView.delete(view)
  }

  /** Total entries held. */
  get size(): number {
    let total = 0
    for (const entries of this.byView.values()) total += entries.size
    return total
  }

  get views(): number {
    return this.byView.size
  }
}
