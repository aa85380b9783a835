// The address policy of discovery: which dial hints are refused, and which subnet an address counts
// against for the per-subnet cap on non-validators.
import { assert, describe, it } from "@effect/vitest"
import { check, refuseHost, subnetOf } from "../src/internal/addresses.js"

const strict = { allowLoopback: false }
const devnet = { allowLoopback: true }

describe("refuseHost", () => {
  it("IPv4: unspecified, multicast and the reserved range above it, link-local; loopback unless allowed", () => {
    for (const [host, reason] of [
      ["0.0.0.0", "unspecified"],
      ["0.1.2.3", "unspecified"],
      ["224.0.0.1", "multicast"],
      ["239.255.255.255", "multicast"],
      ["240.0.0.1", "multicast"],
      ["255.255.255.255", "multicast"],
      ["169.254.0.1", "link-local"],
      ["169.254.255.255", "link-local"],
      ["127.0.0.1", "loopback"],
      ["127.255.0.9", "loopback"]
    ] as const) {
      assert.strictEqual(refuseHost(host, strict), reason, host)
      assert.strictEqual(refuseHost(host, devnet), reason === "loopback" ? undefined : reason, host)
    }
    for (const host of [
      "10.0.0.1",
      "1.2.3.4",
      "169.253.0.1",
      "169.255.0.1",
      "126.0.0.1",
      "223.255.255.255"
    ]) {
      assert.isUndefined(refuseHost(host, strict), host)
    }
  })

  it("IPv6: unspecified, multicast, link-local (fe80::/10); loopback ::1 unless allowed", () => {
    for (const [host, reason] of [
      ["::", "unspecified"],
      ["0:0:0:0:0:0:0:0", "unspecified"],
      ["ff02::1", "multicast"],
      ["FF05::2", "multicast"],
      ["fe80::1", "link-local"],
      ["febf:ffff::1", "link-local"],
      ["fe80::1%eth0", "link-local"],
      ["::1", "loopback"],
      ["0:0:0:0:0:0:0:1", "loopback"]
    ] as const) {
      assert.strictEqual(refuseHost(host, strict), reason, host)
      assert.strictEqual(refuseHost(host, devnet), reason === "loopback" ? undefined : reason, host)
    }
    for (const host of [
      "fd00::1",
      "2001:db8::1",
      "fec0::1",
      "fe7f::1",
      "::2",
      "1::",
      "2001:db8:0:0:0:0:0:1"
    ]) {
      assert.isUndefined(refuseHost(host, strict), host)
    }
  })

  it("IPv4-mapped IPv6 is judged as the IPv4 address inside it, dotted or in hex", () => {
    assert.strictEqual(refuseHost("::ffff:127.0.0.1", strict), "loopback")
    assert.strictEqual(refuseHost("::ffff:7f00:1", strict), "loopback")
    assert.isUndefined(refuseHost("::ffff:127.0.0.1", devnet))
    assert.strictEqual(refuseHost("::ffff:0.0.0.0", strict), "unspecified")
    assert.strictEqual(refuseHost("::ffff:224.0.0.1", strict), "multicast")
    assert.strictEqual(refuseHost("::ffff:169.254.1.1", strict), "link-local")
    assert.isUndefined(refuseHost("::ffff:10.1.2.3", strict))
    assert.isUndefined(refuseHost("0:0:0:0:0:ffff:a01:203", strict))
  })

  it("names: syntax only, localhost (any case, with a root dot) is loopback", () => {
    for (const host of [
      "validator-0.validators.ns.svc.cluster.local",
      "a",
      "_p2p._tcp.example",
      "example.com."
    ]) {
      assert.isUndefined(refuseHost(host, strict), host)
    }
    for (const host of ["localhost", "LOCALHOST", "localhost.", "node.localhost", "node.LocalHost."]) {
      assert.strictEqual(refuseHost(host, strict), "loopback", host)
      assert.isUndefined(refuseHost(host, devnet), host)
    }
    for (const host of [
      "",
      "-a.example",
      "a-.example",
      "a..b",
      "a b",
      "exa$mple",
      `${"a".repeat(64)}.example`
    ]) {
      assert.strictEqual(refuseHost(host, strict), "malformed", JSON.stringify(host))
    }
    assert.strictEqual(refuseHost(`${"a.".repeat(127)}ab`, strict), "malformed") // 256 characters
    assert.isUndefined(refuseHost(`${"a.".repeat(125)}ab`, strict)) // 252 characters
  })

  it("numeric forms getaddrinfo reads as IPv4 (127.1, 2130706433, 0x7f000001, 0177.0.0.1) are refused", () => {
    // Each of these dials 127.0.0.1 through dns.lookup, past a check that only knows dotted quads.
    for (const host of ["127.1", "2130706433", "0x7f000001", "0177.0.0.1", "127.0.0.1.", "1234", "10.0x1"]) {
      assert.strictEqual(refuseHost(host, strict), "malformed", host)
      assert.strictEqual(refuseHost(host, devnet), "malformed", host)
    }
    // A digit-led label is fine inside a name; only a numeric last label is not a name.
    assert.isUndefined(refuseHost("0.validators.example", strict))
    assert.isUndefined(refuseHost("123abc", strict))
  })
})

describe("check", () => {
  it("parses host:port and [ipv6]:port, lower-casing the host", () => {
    assert.deepStrictEqual(check("10.0.0.1:9000", strict), { host: "10.0.0.1", port: 9000 })
    assert.deepStrictEqual(check("[FD00::1]:9000", strict), { host: "fd00::1", port: 9000 })
    assert.deepStrictEqual(check("Validator-0.Example:65535", strict), {
      host: "validator-0.example",
      port: 65535
    })
  })

  it("refuses what is not host:port, port 0 or above 65535, and hosts the policy refuses", () => {
    for (const address of [
      "10.0.0.1",
      "10.0.0.1:",
      ":9000",
      "10.0.0.1:0",
      "10.0.0.1:65536",
      "fd00::1:9000",
      "[fd00::1]"
    ]) {
      assert.strictEqual(check(address, strict), "malformed", address)
    }
    assert.strictEqual(check("127.0.0.1:9000", strict), "loopback")
    assert.deepStrictEqual(check("127.0.0.1:9000", devnet), { host: "127.0.0.1", port: 9000 })
    assert.strictEqual(check("[::1]:9000", strict), "loopback")
    assert.strictEqual(check("0.0.0.0:9000", devnet), "unspecified")
    assert.strictEqual(check("[ff02::1]:9000", devnet), "multicast")
    assert.strictEqual(check("[fe80::1]:9000", devnet), "link-local")
    assert.strictEqual(check("localhost:9000", strict), "loopback")
    assert.strictEqual(check("127.1:9000", devnet), "malformed")
  })
})

describe("subnetOf", () => {
  it("IPv4 by /16, IPv6 by /32, mapped IPv6 as its IPv4, names by the name", () => {
    assert.strictEqual(subnetOf("10.1.2.3"), "10.1.0.0/16")
    assert.strictEqual(subnetOf("10.1.200.7"), subnetOf("10.1.2.3"))
    assert.notStrictEqual(subnetOf("10.2.2.3"), subnetOf("10.1.2.3"))
    assert.strictEqual(subnetOf("2001:db8:1::1"), "2001:db8::/32")
    assert.strictEqual(subnetOf("2001:0DB8:ffff:1::9"), subnetOf("2001:db8::1"))
    assert.notStrictEqual(subnetOf("2001:db9::1"), subnetOf("2001:db8::1"))
    assert.strictEqual(subnetOf("::ffff:10.1.2.3"), "10.1.0.0/16")
    assert.strictEqual(subnetOf("::ffff:a01:203"), "10.1.0.0/16")
    assert.strictEqual(subnetOf("Validator-0.Example."), "name:validator-0.example")
    assert.strictEqual(subnetOf("validator-0.example"), subnetOf("VALIDATOR-0.EXAMPLE"))
  })
})
