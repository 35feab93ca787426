// Load balancing over the endpoints outlier detection has not ejected. Both policies pick in O(1)
// without allocating: the candidates array is owned by the caller and reused.
import type { Endpoint } from "./endpoint.ts";

export type LbPolicyName = "round_robin" | "p2c_least_request";

export interface Balancer {
  /** Picks one of `candidates` (non-empty), or undefined when it is empty. */
  pick(candidates: readonly Endpoint[]): Endpoint | undefined;
}

export class RoundRobin implements Balancer {
  private next = 0;
  pick(candidates: readonly Endpoint[]): Endpoint | undefined {
    if (candidates.length === 0) return undefined;
    // Modulo on every pick keeps the rotation fair when the candidate list shrinks or grows.
    const i = this.next % candidates.length;
    this.next = (i + 1) % 0x7fffffff;
    return candidates[i];
  }
}

/** "Power of two choices": two random distinct endpoints, the one with fewer calls in flight wins. */
export class P2CLeastRequest implements Balancer {
  constructor(private readonly random: () => number = Math.random) {}
  pick(candidates: readonly Endpoint[]): Endpoint | undefined {
    const n = candidates.length;
    if (n === 0) return undefined;
    if (n === 1) return candidates[0];
    const a = Math.floor(this.random() * n);
    let b = Math.floor(this.random() * (n - 1));
    if (b >= a) b++;
    const ea = candidates[a]!;
    const eb = candidates[b]!;
    return eb.active < ea.active ? eb : ea;
  }
}

export function makeBalancer(policy: LbPolicyName): Balancer {
  return policy === "p2c_least_request" ? new P2CLeastRequest() : new RoundRobin();
}
