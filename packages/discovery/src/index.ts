export * as Discovery from "./Discovery.js"
export * as DiscoveryConfig from "./DiscoveryConfig.js"
export * as DiscoveryError from "./DiscoveryError.js"
