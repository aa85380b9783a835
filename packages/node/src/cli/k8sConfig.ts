// `k8s-config`: a kustomize overlay of the Kubernetes base (deploy/kubernetes) for N validators: the
// keys Secret (validator-<ordinal>: a hex seed), the ConfigMap holding the node config (validators
// by key only, found through the headless Service's SRV records) and the values the StatefulSet
// reads from it, and a kustomization.yaml with the namespace, the replica count, the image and,
// when the Service's name or port differ from the base's, the patches that change them.
import { randomBytes } from "node:crypto"
import * as fs from "node:fs/promises"
import * as path from "node:path"
import { Identity } from "@hotstuff2/wire"
import * as Console from "effect/Console"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import type { NodeConfigInput } from "../NodeConfig.js"
import { DevnetFailed } from "./devnet.js"

/** What the base in deploy/kubernetes is built around; the overlay patches the Service's name and port. */
export const Base = {
  statefulSet: "hotstuff2",
  service: "hotstuff2",
  port: 9000,
  healthPort: 8080,
  metricsPort: 9464,
  image: "hotstuff2-net",
  /** Where the init container puts this pod's key (an emptyDir), and the data volume. */
  keyFile: "/var/run/hotstuff2/identity/validator.key",
  dataDirectory: "/var/lib/hotstuff2"
} as const

/** The Secret and ConfigMap names the base's StatefulSet refers to. */
export const SECRET = "hotstuff2-keys"
export const CONFIG_MAP = "hotstuff2-config"

export interface K8sConfigOptions {
  readonly validators: number
  readonly namespace: string
  readonly service: string
  readonly port: number
  readonly networkId: string
  /** The image, `name[:tag]`. */
  readonly image: string
  /** Set as OTEL_EXPORTER_OTLP_ENDPOINT in every pod; none: no export. */
  readonly otlpEndpoint: string | undefined
  /** The directory of the kustomize base (deploy/kubernetes). */
  readonly base: string
  readonly out: string
}

/** The SRV name a headless Service's named port `p2p` publishes. */
export const srvName = (service: string, namespace: string) =>
  `_p2p._tcp.${service}.${namespace}.svc.cluster.local`

const DNS_LABEL = /^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$/

// ---- a YAML writer for the plain maps, lists and strings of these manifests ----

type Yaml = string | number | boolean | ReadonlyArray<Yaml> | { readonly [key: string]: Yaml | undefined }

const scalar = (value: string | number | boolean) =>
  typeof value === "string" ? JSON.stringify(value) : String(value)

const isBlock = (value: Yaml | undefined): boolean =>
  typeof value === "object" && (Array.isArray(value) ? value.length > 0 : Object.keys(value).length > 0)

/** Block style; strings double-quoted (JSON strings are YAML strings), multi-line ones as `|` blocks. */
const toYaml = (value: Yaml, indent = ""): string => {
  if (Array.isArray(value)) {
    return value
      .map((item) => {
        if (!isBlock(item)) return `${indent}- ${inline(item)}\n`
        const body = toYaml(item, `${indent}  `)
        return `${indent}- ${body.slice(indent.length + 2)}`
      })
      .join("")
  }
  return Object.entries(value as { readonly [key: string]: Yaml | undefined })
    .filter((entry): entry is [string, Yaml] => entry[1] !== undefined)
    .map(([key, item]) => {
      if (typeof item === "string" && item.includes("\n")) {
        const lines = item.replace(/\n$/, "").split("\n")
        return `${indent}${key}: |\n${lines.map((l) => `${indent}  ${l}`).join("\n")}\n`
      }
      return isBlock(item)
        ? `${indent}${key}:\n${toYaml(item, `${indent}  `)}`
        : `${indent}${key}: ${inline(item)}\n`
    })
    .join("")
}

const inline = (value: Yaml): string =>
  typeof value === "object" ? (Array.isArray(value) ? "[]" : "{}") : scalar(value)

// ---- the overlay ----

/** The node config every pod reads (its key and advertised name come from the pod, see the base). */
export const nodeConfig = (
  options: Pick<K8sConfigOptions, "namespace" | "service" | "port" | "networkId">,
  validators: ReadonlyArray<Identity.PeerId>
): NodeConfigInput => ({
  identity: { keyFile: Base.keyFile },
  listen: `0.0.0.0:${options.port}`,
  networkId: options.networkId,
  validators: validators.map((id) => ({ id })),
  dataDirectory: Base.dataDirectory,
  discovery: { dns: { srv: [srvName(options.service, options.namespace)] } },
  telemetry: {
    prometheus: `0.0.0.0:${Base.metricsPort}`,
    health: `0.0.0.0:${Base.healthPort}`
  }
})

const splitImage = (image: string) => {
  const slash = image.lastIndexOf("/")
  const colon = image.lastIndexOf(":")
  return colon > slash
    ? { newName: image.slice(0, colon), newTag: image.slice(colon + 1) }
    : { newName: image }
}

/**
 * JSON6902 patches from the base's Service name and port to the chosen ones, one per resource (a
 * rename first would leave a second patch aimed at the old name without a target); none when they agree.
 */
const patches = (options: K8sConfigOptions): ReadonlyArray<Yaml> => {
  const service: Array<Yaml> = []
  const statefulSet: Array<Yaml> = []
  if (options.service !== Base.service) {
    service.push({ op: "replace", path: "/metadata/name", value: options.service })
    statefulSet.push({ op: "replace", path: "/spec/serviceName", value: options.service })
  }
  if (options.port !== Base.port) {
    service.push({ op: "replace", path: "/spec/ports/0/port", value: options.port })
    statefulSet.push({
      op: "replace",
      path: "/spec/template/spec/containers/0/ports/0/containerPort",
      value: options.port
    })
  }
  return [
    ...(service.length === 0
      ? []
      : [
          {
            target: { version: "v1", kind: "Service", name: Base.service },
            patch: toYaml(service),
            ...(options.service === Base.service ? {} : { options: { allowNameChange: true } })
          }
        ]),
    ...(statefulSet.length === 0
      ? []
      : [
          {
            target: { group: "apps", version: "v1", kind: "StatefulSet", name: Base.statefulSet },
            patch: toYaml(statefulSet)
          }
        ])
  ]
}

/** The overlay's files by name, and the validators' PeerIds by ordinal. */
export const render = (
  options: K8sConfigOptions,
  seeds: ReadonlyArray<Buffer>
): { readonly files: Readonly<Record<string, string>>; readonly peers: ReadonlyArray<Identity.PeerId> } => {
  const peers = seeds.map((seed) => Either.getOrThrow(Identity.fromSeed(seed)).peerId)
  const labels = { "app.kubernetes.io/name": "hotstuff2", "app.kubernetes.io/component": "validator" }
  const secret: Yaml = {
    apiVersion: "v1",
    kind: "Secret",
    metadata: { name: SECRET, labels },
    type: "Opaque",
    data: Object.fromEntries(
      seeds.map((seed, i) => [`validator-${i}`, Buffer.from(seed.toString("hex")).toString("base64")])
    )
  }
  const configMap: Yaml = {
    apiVersion: "v1",
    kind: "ConfigMap",
    metadata: { name: CONFIG_MAP, labels },
    data: {
      "node.json": `${JSON.stringify(nodeConfig(options, peers), null, 2)}\n`,
      "service-domain": `${options.service}.${options.namespace}.svc.cluster.local`,
      "p2p-port": String(options.port),
      "otlp-endpoint": options.otlpEndpoint,
      // Which validator each ordinal is, for people: the pods read only their own key.
      validators: `${peers.map((p, i) => `validator-${i} ${p}`).join("\n")}\n`
    }
  }
  const kustomization: Yaml = {
    apiVersion: "kustomize.config.k8s.io/v1beta1",
    kind: "Kustomization",
    namespace: options.namespace,
    resources: [path.relative(options.out, options.base) || ".", "secret.yaml", "configmap.yaml"],
    replicas: [{ name: Base.statefulSet, count: seeds.length }],
    images: [{ name: Base.image, ...splitImage(options.image) }],
    patches: patches(options)
  }
  const header = "# Written by `hotstuff2-net k8s-config`; the Secret holds the validators' private keys.\n"
  return {
    files: {
      "kustomization.yaml": header + toYaml(kustomization),
      "secret.yaml": header + toYaml(secret),
      "configmap.yaml": header + toYaml(configMap)
    },
    peers
  }
}

const refuse = (reason: string) => Effect.fail(new DevnetFailed({ reason }))

/**
 * Writes the overlay into `out` (kustomization.yaml, secret.yaml, configmap.yaml) with new keys, and
 * prints each validator's PeerId by ordinal. Refuses to write over an existing Secret: replacing the
 * validators' keys by accident is not recoverable.
 */
export const k8sConfig = (options: K8sConfigOptions): Effect.Effect<void, DevnetFailed> =>
  Effect.gen(function* () {
    const n = options.validators
    if (!Number.isInteger(n) || n < 1 || n > 128)
      return yield* refuse(`--validators must be 1 to 128, got ${n}`)
    if (!DNS_LABEL.test(options.namespace))
      return yield* refuse(`--namespace must be a DNS label (a-z 0-9 -), got "${options.namespace}"`)
    if (!DNS_LABEL.test(options.service))
      return yield* refuse(`--service must be a DNS label (a-z 0-9 -), got "${options.service}"`)
    if (!Number.isInteger(options.port) || options.port < 1 || options.port > 65535)
      return yield* refuse(`--port must be 1 to 65535, got ${options.port}`)
    if (options.port === Base.healthPort || options.port === Base.metricsPort)
      return yield* refuse(`--port ${options.port} is the health or metrics port of the base`)
    if (options.otlpEndpoint !== undefined && !/^https?:\/\/\S+$/.test(options.otlpEndpoint))
      return yield* refuse(`--otlp-endpoint must be an http(s) URL, got "${options.otlpEndpoint}"`)
    const out = path.resolve(options.out)
    const base = path.resolve(options.base)
    const hasBase = yield* Effect.promise(() =>
      fs.access(path.join(base, "kustomization.yaml")).then(
        () => true,
        () => false
      )
    )
    if (!hasBase)
      return yield* refuse(`--base ${base} has no kustomization.yaml (the deploy/kubernetes base)`)
    const secretFile = path.join(out, "secret.yaml")
    const present = yield* Effect.promise(() =>
      fs.access(secretFile).then(
        () => true,
        () => false
      )
    )
    if (present) return yield* refuse(`${secretFile} exists; refusing to replace the validators' keys`)

    const seeds = Array.from({ length: n }, () => randomBytes(32))
    const { files, peers } = render({ ...options, out, base }, seeds)
    yield* Effect.promise(() => fs.mkdir(out, { recursive: true }))
    for (const [name, text] of Object.entries(files)) {
      yield* Effect.promise(() =>
        fs.writeFile(path.join(out, name), text, name === "secret.yaml" ? { mode: 0o600 } : {})
      )
    }
    for (const [i, peer] of peers.entries()) {
      yield* Console.log(`${peer}  ${Base.statefulSet}-${i}`)
    }
    yield* Console.error(`hotstuff2-net: wrote ${out}; apply it with kubectl apply -k ${options.out}`)
  })
