// What DNS answers mean for validators. An answer is a dial hint, never an identity: an address
// found for a host name that a validator's configured address names is that validator's (`dns`
// source, replacing what DNS gave it before); an SRV target that no configured address names is
// dialled accepting the key of any validator this node is not yet connected to, and the key the
// handshake proves says whose address it is (the "TLS key pin on dial").
import type { PeerManager, PeerRegistry } from "@hotstuff2/peers"
import { Transport } from "@hotstuff2/transport"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import type { DnsTarget } from "./dns.js"
import type { PeerId } from "./record.js"

const normalize = (name: string) => name.toLowerCase().replace(/\.$/, "")

/** SRV targets dialled per round at most: a hostile answer cannot turn this node into a port scanner. */
const PROBES_PER_ROUND = 16

export class DnsPeers {
  /** Each asked name's current answer. */
  private readonly answers = new Map<string, ReadonlyArray<DnsTarget>>()
  /** Host name -> the validators (and configured ports) whose addresses name it. */
  private byHost = new Map<string, Array<{ readonly peer: PeerId; readonly port: number }>>()
  /** What DNS gave each validator last, to replace only what changed. */
  private readonly given = new Map<PeerId, string>()
  /** SRV target addresses a dial proved to be a validator's. */
  private readonly proven = new Map<string, PeerId>()
  probes = 0
  probesFailed = 0

  constructor(
    private readonly srvNames: ReadonlySet<string>,
    private readonly manager: PeerManager.PeerManagerShape,
    private readonly registry: PeerRegistry.PeerRegistryShape,
    private readonly isValidator: (peer: PeerId) => boolean,
    /** Whether some validator of the tracked sets has no connection now. */
    private readonly someUnconnected: () => boolean
  ) {}

  /** The host names in validators' configured addresses: these are resolved, and their answers mapped. */
  setValidators(validators: ReadonlyArray<PeerManager.Validator>): ReadonlyArray<string> {
    this.byHost = new Map()
    for (const v of validators) {
      for (const address of v.addresses) {
        const parsed = Transport.parseAddress(address)
        if (parsed === undefined || /^[\d.]+$|:/.test(parsed.host)) continue
        const host = normalize(parsed.host)
        const list = this.byHost.get(host) ?? []
        list.push({ peer: v.id, port: parsed.port })
        this.byHost.set(host, list)
      }
    }
    return [...this.byHost.keys()]
  }

  /** A name's answer changed: every validator's DNS addresses are worked out again. */
  onAnswer(name: string, targets: ReadonlyArray<DnsTarget>): Effect.Effect<void> {
    this.answers.set(normalize(name), targets)
    return this.apply
  }

  private get apply(): Effect.Effect<void> {
    return Effect.gen(this, function* () {
      const perPeer = new Map<PeerId, Set<string>>()
      const add = (peer: PeerId, address: string) => {
        if (!this.isValidator(peer)) return
        const set = perPeer.get(peer) ?? new Set<string>()
        set.add(address)
        perPeer.set(peer, set)
      }
      for (const [name, targets] of this.answers) {
        const srv = this.srvNames.has(name)
        for (const t of targets) {
          if (srv) {
            const named = this.byHost.get(normalize(t.target))
            if (named !== undefined) for (const { peer } of named) add(peer, t.address)
            const proven = this.proven.get(t.address)
            if (proven !== undefined) add(proven, t.address)
          } else {
            for (const { peer, port } of this.byHost.get(name) ?? []) {
              add(peer, Transport.formatAddress(t.address, port))
            }
          }
        }
      }
      for (const peer of new Set([...this.given.keys(), ...perPeer.keys()])) {
        const addresses = [...(perPeer.get(peer) ?? [])].sort()
        const key = addresses.join(" ")
        if (this.given.get(peer) === key) continue
        this.given.set(peer, key)
        yield* this.registry.replaceAddresses(peer, "dns", addresses)
      }
    })
  }

  /**
   * Dials the SRV targets no configured address names and no dial has proven yet, while some
   * validator has no connection, at most `PROBES_PER_ROUND` a round: the key the handshake proves
   * (any validator's) maps the target to its validator. A probe that reaches a validator already
   * connected makes a second connection, and the tie-break keeps one of the two (possibly the new
   * one); the mapping stays, so a target is dialled until it is proven once.
   */
  get probe(): Effect.Effect<void> {
    return Effect.gen(this, function* () {
      if (!this.someUnconnected()) return
      const unproven: Array<string> = []
      for (const [name, targets] of this.answers) {
        if (!this.srvNames.has(name)) continue
        for (const t of targets) {
          if (!this.byHost.has(normalize(t.target)) && !this.proven.has(t.address)) unproven.push(t.address)
        }
      }
      for (const address of unproven.slice(0, PROBES_PER_ROUND)) {
        this.probes++
        const dialed = yield* Effect.either(this.manager.connectTo(address, this.isValidator))
        if (Either.isLeft(dialed)) {
          this.probesFailed++
          continue
        }
        this.proven.set(address, dialed.right)
      }
      if (unproven.length > 0) yield* this.apply
    })
  }
}
