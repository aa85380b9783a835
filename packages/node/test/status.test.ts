// The status line's peer count is of validators: a non-validator connected (admitNonValidators) does
// not make "2/1 peers connected".
import { assert, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import { snapshot } from "../src/cli/status.js"
import type { NodeNetworkShape, PeerStatus } from "../src/NodeNetwork.js"
import { peerId } from "./fixtures/cluster.js"

const status = (n: number, validator: boolean, state: PeerStatus["state"], rtt?: number): PeerStatus => ({
  id: peerId(n),
  validator,
  addresses: [],
  sources: [],
  epochs: validator ? [0n] : [],
  state,
  score: 0,
  rtt,
  ban: Option.none(),
  lastSeen: undefined,
  dialFailures: 0
})

it.effect("counts connected validators only, and their mean RTT", () =>
  Effect.gen(function* () {
    const net = {
      peers: Effect.succeed([
        status(1, true, "connected", 2),
        status(2, true, "disconnected"),
        status(9, false, "connected", 40)
      ])
    } as unknown as NodeNetworkShape
    const s = yield* snapshot(net)
    assert.strictEqual(s.peersConnected, 1)
    assert.strictEqual(s.meanRtt, 2)
  })
)
