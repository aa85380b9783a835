// deploy/kubernetes and the `k8s-config` overlay, proven without a cluster: every manifest parses and
// validates against the Kubernetes API schema (kubernetes-models), the base lists exactly its files,
// the overlay the CLI writes renders (a kustomize subset, test/fixtures/kustomize.ts), and every
// cross-reference between the rendered resources holds; each cross-reference check fails when its
// reference is broken. The Dockerfile still copies every workspace before `npm ci`.
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { assert, describe, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import { StatefulSet } from "kubernetes-models/apps/v1/StatefulSet"
import { ConfigMap } from "kubernetes-models/v1/ConfigMap"
import { Secret } from "kubernetes-models/v1/Secret"
import { Service } from "kubernetes-models/v1/Service"
import { runCli } from "./fixtures/cli.js"
import { type Resource, readDocuments, readKustomization, render } from "./fixtures/kustomize.js"
import { one, problems } from "./fixtures/manifestChecks.js"

const REPO = path.resolve(__dirname, "../../..")
const BASE = path.join(REPO, "deploy/kubernetes")

const MODELS: Record<string, new (data: any) => { validate(): void }> = {
  "v1/Service": Service,
  "v1/Secret": Secret,
  "v1/ConfigMap": ConfigMap,
  "apps/v1/StatefulSet": StatefulSet
}

/** Validates `r` against its kind's API schema; throws naming the resource and the failing fields. */
const validate = (r: Resource) => {
  const Model = MODELS[`${r.apiVersion}/${r.kind}`]
  if (Model === undefined) throw new Error(`no schema here for ${r.apiVersion} ${r.kind}`)
  try {
    new Model(r).validate()
  } catch (e) {
    throw new Error(`${r.kind} ${r.metadata.name}: ${(e as Error).message}`)
  }
}

/** Runs `k8s-config` into a new directory; returns the overlay directory. */
const overlay = (args: ReadonlyArray<string>) =>
  Effect.gen(function* () {
    const out = fs.mkdtempSync(path.join(os.tmpdir(), "hotstuff2-k8s-"))
    yield* Effect.addFinalizer(() => Effect.sync(() => fs.rmSync(out, { recursive: true, force: true })))
    const done = yield* runCli(["k8s-config", "--base", BASE, "--out", out, ...args])
    assert.strictEqual(done.code, 0, done.stderr)
    return { out, stdout: done.stdout, stderr: done.stderr }
  })

describe("the kustomize base", () => {
  it("lists every manifest in its directory, each exists, and nothing else is there", () => {
    const listed: Array<string> = readKustomization(BASE).resources
    for (const file of listed) assert.isTrue(fs.existsSync(path.join(BASE, file)), `${file} is listed`)
    const present = fs
      .readdirSync(BASE)
      .filter((f) => /\.ya?ml$/.test(f) && f !== "kustomization.yaml")
      .sort()
    assert.deepStrictEqual([...listed].sort(), present)
  })

  it("each of its manifests parses and validates against the API schema", () => {
    for (const file of readKustomization(BASE).resources as Array<string>) {
      for (const doc of readDocuments(path.join(BASE, file))) validate(doc)
    }
  })

  it("the API schema refuses a broken StatefulSet (the validation is real)", () => {
    const sts = structuredClone(one(render(BASE), "StatefulSet"))
    sts.spec.template.spec.containers[0].ports[0].containerPort = "p2p"
    assert.throws(() => validate(sts), /containerPort/)
    delete sts.spec.selector
    assert.throws(() => validate(sts), /selector/)
  })
})

describe("k8s-config", () => {
  it.scopedLive(
    "writes an overlay of 4 validators whose rendered resources validate and hold together, one key per ordinal",
    () =>
      Effect.gen(function* () {
        const { out, stdout } = yield* overlay(["--validators", "4", "--namespace", "consensus"])
        const resources = render(out)
        for (const r of resources) validate(r)
        assert.deepStrictEqual(resources.map((r) => r.kind).sort(), [
          "ConfigMap",
          "Secret",
          "Service",
          "StatefulSet"
        ])
        assert.deepStrictEqual(problems(resources), [])
        const sts = one(resources, "StatefulSet")
        assert.strictEqual(sts.spec.replicas, 4)
        assert.strictEqual(sts.metadata.namespace, "consensus")
        assert.strictEqual(sts.spec.template.spec.containers[0].image, "hotstuff2-net:local")
        // The CLI prints each validator's PeerId with its pod, in ordinal order, as the config lists them.
        const config = JSON.parse(one(resources, "ConfigMap").data["node.json"])
        assert.deepStrictEqual(
          stdout.trim().split("\n"),
          config.validators.map((v: { id: string }, i: number) => `${v.id}  hotstuff2-${i}`)
        )
        assert.strictEqual((fs.statSync(path.join(out, "secret.yaml")).mode & 0o777).toString(8), "600")
        // A second run never replaces the keys.
        const again = yield* runCli(["k8s-config", "--base", BASE, "--out", out])
        assert.strictEqual(again.code, 1)
        assert.include(again.stderr, "refusing to replace the validators' keys")
      })
  )

  it.scopedLive(
    "another Service name, port, image and an OTLP endpoint: the patches rename and re-port the Service and the StatefulSet together",
    () =>
      Effect.gen(function* () {
        const { out } = yield* overlay([
          "--validators",
          "7",
          "--namespace",
          "chain",
          "--service",
          "validators",
          "--port",
          "9100",
          "--image",
          "registry.example/hotstuff2-net:1.2",
          "--otlp-endpoint",
          "http://otel-collector.observability:4318"
        ])
        const resources = render(out)
        for (const r of resources) validate(r)
        assert.deepStrictEqual(problems(resources), [])
        const service = one(resources, "Service")
        assert.strictEqual(service.metadata.name, "validators")
        assert.strictEqual(service.spec.ports[0].port, 9100)
        const sts = one(resources, "StatefulSet")
        assert.strictEqual(sts.spec.serviceName, "validators")
        assert.strictEqual(sts.spec.replicas, 7)
        assert.strictEqual(sts.spec.template.spec.containers[0].image, "registry.example/hotstuff2-net:1.2")
        const configMap = one(resources, "ConfigMap")
        assert.strictEqual(configMap.data["otlp-endpoint"], "http://otel-collector.observability:4318")
        assert.deepStrictEqual(JSON.parse(configMap.data["node.json"]).discovery.dns.srv, [
          "_p2p._tcp.validators.chain.svc.cluster.local"
        ])
      })
  )

  it.scopedLive("refuses a namespace that is not a DNS label", () =>
    Effect.gen(function* () {
      const done = yield* runCli([
        "k8s-config",
        "--base",
        BASE,
        "--out",
        os.tmpdir(),
        "--namespace",
        "Bad_NS"
      ])
      assert.strictEqual(done.code, 1)
      assert.include(done.stderr, "--namespace must be a DNS label")
    })
  )

  it.scopedLive("each cross-reference check fails when its reference is broken", () =>
    Effect.gen(function* () {
      const { out } = yield* overlay(["--validators", "4"])
      const rendered = render(out)
      const breaks: ReadonlyArray<readonly [string, (rs: Array<Resource>) => void]> = [
        ["service-selector", (rs) => (one(rs, "Service").spec.selector["app.kubernetes.io/name"] = "other")],
        ["service-name", (rs) => (one(rs, "StatefulSet").spec.serviceName = "other")],
        ["service-headless", (rs) => delete one(rs, "Service").spec.publishNotReadyAddresses],
        ["parallel", (rs) => (one(rs, "StatefulSet").spec.podManagementPolicy = "OrderedReady")],
        ["service-p2p-port", (rs) => (one(rs, "Service").spec.ports[0].targetPort = "peer")],
        ["service-port-is-container-port", (rs) => (one(rs, "Service").spec.ports[0].port = 9999)],
        ["readinessProbe-port", (rs) => (container(rs).readinessProbe.httpGet.port = "metrics")],
        ["liveness-path", (rs) => (container(rs).livenessProbe.httpGet.path = "/metrics")],
        ["health-port", (rs) => (portNamed(rs, "health").containerPort = 8081)],
        [
          "scrape-port",
          (rs) => (one(rs, "StatefulSet").spec.template.metadata.annotations["prometheus.io/port"] = "9000")
        ],
        ["secret-keys", (rs) => (one(rs, "StatefulSet").spec.replicas = 5)],
        ["init-picks-key", (rs) => (initContainer(rs).command[3] = "/var/run/hotstuff2/keys/key-$(ORDINAL)")],
        ["key-file", (rs) => editConfig(rs, (c) => (c.identity.keyFile = "/keys/validator.key"))],
        ["validators-by-ordinal", (rs) => editConfig(rs, (c) => c.validators.reverse())],
        [
          "srv-name",
          (rs) => editConfig(rs, (c) => (c.discovery.dns.srv = ["_p2p._tcp.other.default.svc.cluster.local"]))
        ],
        ["listen-port", (rs) => editConfig(rs, (c) => (c.listen = "0.0.0.0:9001"))],
        ["data-directory", (rs) => editConfig(rs, (c) => (c.dataDirectory = "/data"))],
        ["config-decodes", (rs) => editConfig(rs, (c) => (c.networkId = "not a network id"))],
        ["config-volume", (rs) => (container(rs).args = ["run", "--config", "/etc/node.json"])],
        [
          "advertise",
          (rs) => (envNamed(rs, "HOTSTUFF2_DISCOVERY__ADVERTISE").value = '["$(POD_NAME):9000"]')
        ],
        ["env", (rs) => delete one(rs, "ConfigMap").data["service-domain"]],
        ["read-only-root-validator", (rs) => (container(rs).securityContext.readOnlyRootFilesystem = false)],
        ["non-root", (rs) => delete one(rs, "StatefulSet").spec.template.spec.securityContext.runAsNonRoot]
      ]
      for (const [name, breakIt] of breaks) {
        const broken = structuredClone(rendered)
        breakIt(broken)
        assert.include(problems(broken), name, `breaking ${name}`)
      }
    })
  )
})

const container = (rs: Array<Resource>) => one(rs, "StatefulSet").spec.template.spec.containers[0]
const initContainer = (rs: Array<Resource>) => one(rs, "StatefulSet").spec.template.spec.initContainers[0]
const portNamed = (rs: Array<Resource>, name: string) => container(rs).ports.find((p: any) => p.name === name)
const envNamed = (rs: Array<Resource>, name: string) => container(rs).env.find((e: any) => e.name === name)
const editConfig = (rs: Array<Resource>, edit: (config: any) => void) => {
  const configMap = one(rs, "ConfigMap")
  const config = JSON.parse(configMap.data["node.json"])
  edit(config)
  configMap.data["node.json"] = JSON.stringify(config)
}

it("the Dockerfile copies every workspace's package.json before npm ci, and exposes the p2p, health and metrics ports", () => {
  const dockerfile = fs.readFileSync(path.join(REPO, "Dockerfile"), "utf8")
  for (const workspace of fs.readdirSync(path.join(REPO, "packages"))) {
    if (!fs.existsSync(path.join(REPO, "packages", workspace, "package.json"))) continue
    assert.include(dockerfile, `COPY packages/${workspace}/package.json packages/${workspace}/`)
  }
  assert.match(dockerfile, /^EXPOSE 9000 8080 9464$/m)
})
