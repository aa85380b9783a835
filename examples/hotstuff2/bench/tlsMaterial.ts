// TLS material for the raw node:tls baseline: a self-signed Ed25519 certificate of a fresh key, made
// as TlsTransport makes the validators' own (TLS 1.3 only), so the baseline pays the same cipher.
import type * as tls from "node:tls"
import type { Identity } from "@hotstuff2/wire"

interface CertificateModule {
  readonly selfSignedCertificate: (
    id: Identity.Identity,
    validity: { readonly notBefore: Date; readonly notAfter: Date }
  ) => { readonly keyPem: string; readonly certPem: string }
}

// The certificate maker is internal to @hotstuff2/transport (no subpath export): load the compiled
// module beside the package's entry point, as the node and peers benchmarks do.
const certificates: CertificateModule = await import(
  new URL("./internal/certificate.js", import.meta.resolve("@hotstuff2/transport")).href
)

const DAY = 24 * 60 * 60 * 1000

export const tlsMaterial = (id: Identity.Identity): tls.SecureContextOptions => {
  const now = Date.now()
  const certificate = certificates.selfSignedCertificate(id, {
    notBefore: new Date(now - DAY),
    notAfter: new Date(now + 3650 * DAY)
  })
  return { key: certificate.keyPem, cert: certificate.certPem, minVersion: "TLSv1.3", maxVersion: "TLSv1.3" }
}
