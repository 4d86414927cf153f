// The system's network errors that may pass, whoever meets them (the coordinator's database
// connections, the CLI's requests): a peer restarting or not up yet, a host, network or DNS
// unreachable for a while. Each side adds the codes its own client library gives.
export const PASSING_NETWORK_ERRORS = [
  "ECONNREFUSED",
  "ECONNRESET",
  "ETIMEDOUT",
  "EPIPE",
  "EHOSTUNREACH",
  "EHOSTDOWN",
  "ENETUNREACH",
  "ENETDOWN",
  "ENOTFOUND",
  "EAI_AGAIN",
] as const;
