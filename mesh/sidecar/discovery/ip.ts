// `isIP` without `node:net`. The sidecar used node:net only for this function, and importing node:net
// loads Bun's JavaScript socket layer with it (~1.5 MB anonymous + ~1.6 MB file-backed pages alone,
// ~0.4–0.8 MB on top of what the sidecar loads anyway). The expressions are Node's own
// (lib/internal/net.js), which Bun's node:net follows; ip.test.ts checks the two agree on valid,
// invalid and generated inputs.

const V4_SEG = "(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9][0-9]|[0-9])";
const V4_STR = `(?:${V4_SEG}\\.){3}${V4_SEG}`;
const IPV4 = new RegExp(`^${V4_STR}$`);

const V6_SEG = "(?:[0-9a-fA-F]{1,4})";
const IPV6 = new RegExp(
  "^(?:" +
    `(?:${V6_SEG}:){7}(?:${V6_SEG}|:)|` +
    `(?:${V6_SEG}:){6}(?:${V4_STR}|:${V6_SEG}|:)|` +
    `(?:${V6_SEG}:){5}(?::${V4_STR}|(?::${V6_SEG}){1,2}|:)|` +
    `(?:${V6_SEG}:){4}(?:(?::${V6_SEG}){0,1}:${V4_STR}|(?::${V6_SEG}){1,3}|:)|` +
    `(?:${V6_SEG}:){3}(?:(?::${V6_SEG}){0,2}:${V4_STR}|(?::${V6_SEG}){1,4}|:)|` +
    `(?:${V6_SEG}:){2}(?:(?::${V6_SEG}){0,3}:${V4_STR}|(?::${V6_SEG}){1,5}|:)|` +
    `(?:${V6_SEG}:){1}(?:(?::${V6_SEG}){0,4}:${V4_STR}|(?::${V6_SEG}){1,6}|:)|` +
    `(?::(?:(?::${V6_SEG}){0,5}:${V4_STR}|(?::${V6_SEG}){1,7}|:))` +
    // A zone index (`fe80::1%eth0`), as node:net accepts it.
    ")(?:%[0-9a-zA-Z-.:]{1,})?$",
);

/** 4 for a dotted-quad IPv4 address, 6 for an IPv6 address, 0 otherwise — as `isIP` of node:net. */
export function isIP(input: string): 0 | 4 | 6 {
  if (IPV4.test(input)) return 4;
  if (IPV6.test(input)) return 6;
  return 0;
}
