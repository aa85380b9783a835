# hotstuff2-net: the HotStuff-2 network layer's CLI (see packages/node/CLI.md).
#   docker build -t hotstuff2-net:local .
#   docker run --rm hotstuff2-net:local devnet --validators 4 --duration 30s
FROM node:20-slim

WORKDIR /app
ENV TURBO_TELEMETRY_DISABLED=1

# Dependencies first, so that a source change does not reinstall them.
COPY package.json package-lock.json ./
COPY packages/wire/package.json packages/wire/
COPY packages/transport/package.json packages/transport/
COPY packages/peers/package.json packages/peers/
COPY packages/discovery/package.json packages/discovery/
COPY packages/broadcast/package.json packages/broadcast/
COPY packages/testing/package.json packages/testing/
COPY packages/node/package.json packages/node/
RUN npm ci --no-audit --no-fund

COPY tsconfig.base.json tsconfig.json ./
COPY packages ./packages
RUN npx tsc -b packages/node

# Keys and configs written by `devnet-config` (docker-compose.yml mounts a volume here); the
# volume takes this directory's owner, so the unprivileged user can write its 0600 key files.
RUN mkdir -p /devnet && chown node:node /devnet
USER node

# p2p, health probes (/healthz, /readyz), Prometheus metrics; deploy/kubernetes runs it as uid 1000 (node).
EXPOSE 9000 8080 9464
ENTRYPOINT ["node", "packages/node/bin/hotstuff2-net.js"]
CMD ["--help"]
