// Hosts known to belong to validators, whose handshakes may use the transport's reserved slots:
// slowloris from other addresses cannot keep a validator from reconnecting.
import { Transport } from "@hotstuff2/transport"
import type { PeerId, Validator } from "../PeerManager.js"

/** Remote hosts remembered per validator for the reserved handshake slots. */
const HOSTS_PER_VALIDATOR = 4

const hostOf = (address: string) => Transport.parseAddress(address)?.host.replace(/^::ffff:/i, "")

/**
 * Hosts known to belong to validators: those of their configured addresses, and the remote hosts
 * their connections came from (at most `HOSTS_PER_VALIDATOR` each). Their handshakes may use the
 * transport's reserved slots.
 */
export class ReservedHosts {
  private readonly hosts = new Set<string>()
  private readonly learned = new Map<PeerId, Set<string>>()

  constructor(
    /** The current validator set (owned by the manager): only validators' hosts are learned. */
    private readonly validators: ReadonlySet<PeerId>,
    configured: ReadonlyArray<Validator>
  ) {
    this.addConfigured(configured)
  }

  /** Validators' configured addresses (at start, and at each change of the set): their hosts are reserved. */
  addConfigured(configured: ReadonlyArray<Validator>): void {
    for (const v of configured) {
      for (const address of v.addresses) {
        const host = hostOf(address)
        if (host !== undefined) this.hosts.add(host)
      }
    }
  }

  /** Whether a handshake from `host` may use a reserved slot. */
  has(host: string): boolean {
    return this.hosts.has(host)
  }

  /** A validator's connection came from `address`: its host is reserved from now on. */
  learn(peer: PeerId, address: string): void {
    const host = hostOf(address)
    if (host === undefined || this.hosts.has(host) || !this.validators.has(peer)) return
    const learned = this.learned.get(peer) ?? new Set<string>()
    if (learned.size >= HOSTS_PER_VALIDATOR) return
    learned.add(host)
    this.learned.set(peer, learned)
    this.hosts.add(host)
  }
}
