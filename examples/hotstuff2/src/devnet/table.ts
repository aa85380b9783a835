// The devnet's live table, one line per validator: committed height, commits/s, commit latency p50
// and p99, view, timeouts, blocks synced.
import type { StatusReport } from "./protocol.js"

export interface Row {
  readonly index: number
  readonly peerId: string | undefined
  readonly state: string
  readonly latest: StatusReport | undefined
  readonly previous: StatusReport | undefined
}

/** Blocks committed per second between two reports of one validator. */
export const commitsPerSecond = (
  previous: StatusReport | undefined,
  latest: StatusReport | undefined
): number => {
  if (previous === undefined || latest === undefined) return 0
  const seconds = (latest.at - previous.at) / 1000
  if (seconds <= 0) return 0
  return Number(latest.status.committedHeight - previous.status.committedHeight) / seconds
}

const COLUMNS = [
  ["validator", 12],
  ["state", 8],
  ["height", 8],
  ["commits/s", 9],
  ["p50 ms", 7],
  ["p99 ms", 7],
  ["view", 8],
  ["timeouts", 8],
  ["synced", 7]
] as const

const line = (cells: ReadonlyArray<string>) =>
  cells
    .map((cell, i) => {
      const width = COLUMNS[i]![1]
      return i < 2 ? cell.padEnd(width) : cell.padStart(width)
    })
    .join("  ")
    .trimEnd()

const millis = (value: number | undefined) => (value === undefined ? "-" : value.toFixed(0))

export const header = (): string => line(COLUMNS.map(([name]) => name))

export const row = (r: Row): string => {
  const s = r.latest?.status
  return line([
    `v${r.index} ${r.peerId?.slice(0, 8) ?? "--------"}`,
    r.state,
    s === undefined ? "-" : String(s.committedHeight),
    commitsPerSecond(r.previous, r.latest).toFixed(1),
    millis(s?.latency.p50),
    millis(s?.latency.p99),
    s === undefined ? "-" : String(s.view),
    s === undefined ? "-" : String(s.timeouts),
    s === undefined ? "-" : String(s.synced)
  ])
}
