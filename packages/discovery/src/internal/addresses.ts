// What an address of a discovered peer may be, and which subnet it counts against. Discovery only
// hands out dial hints, but a dial hint can still be abused: pointing validators at this machine's
// own services (loopback), at nothing (unspecified), at many hosts at once (multicast, broadcast),
// or crowding one subnet with attacker keys. Each address is classified once, here.
import * as net from "node:net"
import { Transport } from "@hotstuff2/transport"

/** Why an address is refused; `loopback` only while loopback is not allowed (a devnet on one machine). */
export type AddressRefusal = "malformed" | "unspecified" | "multicast" | "loopback" | "link-local" | "name"

export interface AddressPolicy {
  /** Loopback (127.0.0.0/8, ::1, `localhost`) is accepted: a network on one machine, tests. */
  readonly allowLoopback: boolean
  /**
   * DNS names are accepted (default). Off for peer records: the dialer resolves a name wherever its
   * DNS says, loopback included, so a record could point validators at their own services.
   */
  readonly allowNames?: boolean
}

/** The parsed host and port, or why the address is refused. */
export const check = (
  address: string,
  policy: AddressPolicy
): { readonly host: string; readonly port: number } | AddressRefusal => {
  const parsed = Transport.parseAddress(address)
  if (parsed === undefined || parsed.port === 0) return "malformed"
  const host = parsed.host.toLowerCase()
  const refusal = refuseHost(host, policy)
  return refusal ?? { host, port: parsed.port }
}

/** Why a host (an IP, or a DNS name) is refused as a place to dial, if it is. */
export const refuseHost = (host: string, policy: AddressPolicy): AddressRefusal | undefined => {
  const kind = net.isIP(host)
  if (kind === 0) {
    // A name: only its syntax is checked here; what it resolves to is checked when it resolves.
    if (
      !/^(?=.{1,253}$)([a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9])?\.)*[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9])?\.?$/i.test(
        host
      )
    ) {
      return "malformed"
    }
    if (policy.allowNames === false) return "name"
    const name = host.toLowerCase().replace(/\.$/, "")
    // A numeric last label is no DNS name (no top-level domain is numeric) but an IPv4 address in a
    // form `net.isIP` does not take and getaddrinfo does (inet_aton): `127.1`, `2130706433`,
    // `0x7f000001`, `0177.0.0.1` all dial 127.0.0.1. Refused rather than classified.
    if (/^(\d+|0x[0-9a-f]*)$/.test(name.slice(name.lastIndexOf(".") + 1))) return "malformed"
    if (name === "localhost" || name.endsWith(".localhost"))
      return policy.allowLoopback ? undefined : "loopback"
    return undefined
  }
  if (kind === 4) {
    const [a, b] = host.split(".").map(Number) as [number, number]
    if (a === 0) return "unspecified"
    if (a >= 224) return "multicast" // 224/4 multicast, 240/4 reserved, 255.255.255.255 broadcast
    if (a === 127) return policy.allowLoopback ? undefined : "loopback"
    if (a === 169 && b === 254) return "link-local"
    return undefined
  }
  const v6 = expandV6(host)
  if (v6 === undefined) return "malformed"
  const mapped = mappedV4(v6)
  if (mapped !== undefined) return refuseHost(mapped, policy)
  if (v6.every((w) => w === 0)) return "unspecified"
  if (v6.slice(0, 7).every((w) => w === 0) && v6[7] === 1)
    return policy.allowLoopback ? undefined : "loopback"
  if ((v6[0]! & 0xff00) === 0xff00) return "multicast"
  if ((v6[0]! & 0xffc0) === 0xfe80) return "link-local"
  return undefined
}

/**
 * The subnet an address counts against for the per-subnet cap on non-validators: /16 for IPv4, /32
 * for IPv6 (what one operator or one cloud tenant typically holds), the name itself for a DNS name.
 */
export const subnetOf = (host: string): string => {
  const kind = net.isIP(host)
  if (kind === 4) {
    const [a, b] = host.split(".")
    return `${a}.${b}.0.0/16`
  }
  if (kind === 6) {
    const v6 = expandV6(host)
    if (v6 === undefined) return host
    const mapped = mappedV4(v6)
    if (mapped !== undefined) return subnetOf(mapped)
    return `${v6[0]!.toString(16)}:${v6[1]!.toString(16)}::/32`
  }
  return `name:${host.toLowerCase().replace(/\.$/, "")}`
}

/** An IPv6 address as its eight 16-bit words (an embedded IPv4 tail allowed), or undefined. */
const expandV6 = (host: string): Array<number> | undefined => {
  let text = host.replace(/%.*$/, "")
  const v4 = /(\d+\.\d+\.\d+\.\d+)$/.exec(text)
  if (v4) {
    const parts = v4[1]!.split(".").map(Number)
    text = `${text.slice(0, -v4[1]!.length)}${((parts[0]! << 8) | parts[1]!).toString(16)}:${((parts[2]! << 8) | parts[3]!).toString(16)}`
  }
  const halves = text.split("::")
  if (halves.length > 2) return undefined
  const head = halves[0] === "" ? [] : halves[0]!.split(":")
  const tail = halves.length === 2 ? (halves[1] === "" ? [] : halves[1]!.split(":")) : []
  const missing = 8 - head.length - tail.length
  if (halves.length === 1 ? missing !== 0 : missing < 0) return undefined
  const words = [...head, ...Array<string>(halves.length === 2 ? missing : 0).fill("0"), ...tail].map((w) =>
    Number.parseInt(w, 16)
  )
  return words.length === 8 && words.every((w) => Number.isInteger(w) && w >= 0 && w <= 0xffff)
    ? words
    : undefined
}

/** The IPv4 address inside an IPv4-mapped IPv6 address (::ffff:a.b.c.d), if it is one. */
const mappedV4 = (v6: ReadonlyArray<number>): string | undefined =>
  v6.slice(0, 5).every((w) => w === 0) && v6[5] === 0xffff
    ? `${v6[6]! >> 8}.${v6[6]! & 0xff}.${v6[7]! >> 8}.${v6[7]! & 0xff}`
    : undefined
