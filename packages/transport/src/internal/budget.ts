// The node-wide memory budget shared by every connection of one transport: message bytes waiting in
// connections' inbound queues for their consumers, and bytes queued outbound. Each connection is
// bounded on its own (`maxInboundBytes`, each channel's `maxQueuedBytes`), but a node with hundreds of
// peers could hold hundreds of MiB per peer; these two totals bound the whole node.
//
// Inbound: past `maxBufferedInboundBytes`, a connection that queues one more frame pauses its socket
// (TCP pushes back on that sender); the readers that keep receiving are the ones paused, and every
// connection paused so is resumed once the consumers have brought the total back under the budget.
// Outbound: a send that would take the total past `maxQueuedOutboundBytes` is refused with
// `Backpressure` (`limit: "node"`) on a `reject` channel, or dropped and counted on the others.

/** What the budget needs of a connection it paused. */
export interface BudgetPausable {
  /** Resumes reading if nothing else holds it paused. */
  readonly resumeFromBudget: () => void
}

export class Budget {
  inbound = 0
  outbound = 0
  private readonly paused = new Set<BudgetPausable>()

  constructor(
    readonly maxInbound: number,
    readonly maxOutbound: number
  ) {}

  get inboundFull(): boolean {
    return this.inbound >= this.maxInbound
  }

  /** `connection` paused its socket because the node is over its inbound budget. */
  pausedOver(connection: BudgetPausable): void {
    this.paused.add(connection)
  }

  /** `connection` is gone or reading again on its own. */
  forget(connection: BudgetPausable): void {
    this.paused.delete(connection)
  }

  /** Inbound bytes left the queues (taken by consumers, or dropped at a close). */
  releaseInbound(bytes: number): void {
    this.inbound -= bytes
    if (this.paused.size === 0 || this.inboundFull) return
    const resumed = [...this.paused]
    this.paused.clear()
    for (const connection of resumed) connection.resumeFromBudget()
  }
}

/** No node-wide limit: each connection is bounded by its own limits only. */
export const unlimited = (): Budget => new Budget(Number.POSITIVE_INFINITY, Number.POSITIVE_INFINITY)
