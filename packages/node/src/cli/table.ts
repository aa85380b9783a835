// The devnet's live table and summary, as plain text lines.
import type { Snapshot } from "./protocol.js"

/** Per-second rates between two snapshots of one validator. */
export interface Rates {
  readonly proposals: number
  readonly votes: number
  readonly bytesIn: number
  readonly bytesOut: number
}

export const zeroRates: Rates = { proposals: 0, votes: 0, bytesIn: 0, bytesOut: 0 }

export const proposalsOf = (s: Snapshot) => s.proposalsSent + s.proposalsReceived
export const votesOf = (s: Snapshot) => s.votesSent + s.votesReceived

export const rates = (before: Snapshot, after: Snapshot): Rates => {
  const seconds = (after.at - before.at) / 1000
  if (seconds <= 0) return zeroRates
  return {
    proposals: (proposalsOf(after) - proposalsOf(before)) / seconds,
    votes: (votesOf(after) - votesOf(before)) / seconds,
    bytesIn: (after.bytesIn - before.bytesIn) / seconds,
    bytesOut: (after.bytesOut - before.bytesOut) / seconds
  }
}

/** What the table shows of one validator. */
export interface Row {
  readonly index: number
  readonly peerId: string | undefined
  readonly state: string
  readonly snapshot: Snapshot | undefined
  readonly rates: Rates
  readonly peers: number
}

export const bytes = (n: number): string => {
  const units = ["B", "KiB", "MiB", "GiB"]
  let value = n
  let unit = 0
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024
    unit++
  }
  return `${value.toFixed(unit === 0 ? 0 : 1)} ${units[unit]}`
}

const rate = (n: number) => (n >= 100 ? n.toFixed(0) : n.toFixed(1))

const COLUMNS = [
  ["validator", 14],
  ["state", 8],
  ["view", 8],
  ["proposals/s", 11],
  ["votes/s", 9],
  ["in/s", 11],
  ["out/s", 11],
  ["peers", 6],
  ["rtt ms", 7],
  ["timeouts", 8]
] as const

const line = (cells: ReadonlyArray<string>) =>
  cells
    .map((cell, i) => {
      const width = COLUMNS[i]![1]
      return i < 2 ? cell.padEnd(width) : cell.padStart(width)
    })
    .join("  ")
    .trimEnd()

export const header = (): string => line(COLUMNS.map(([name]) => name))

export const row = (r: Row): string => {
  const s = r.snapshot
  return line([
    `v${r.index} ${r.peerId?.slice(0, 8) ?? "--------"}`,
    r.state,
    s === undefined ? "-" : String(s.view),
    rate(r.rates.proposals),
    rate(r.rates.votes),
    `${bytes(r.rates.bytesIn)}`,
    `${bytes(r.rates.bytesOut)}`,
    s === undefined ? "-" : `${s.peersConnected}/${r.peers}`,
    s?.meanRtt == null ? "-" : s.meanRtt.toFixed(2),
    s === undefined ? "-" : String(s.timeouts)
  ])
}
