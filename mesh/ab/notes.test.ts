import { describe, expect, test } from "bun:test";
import { qualityNotes } from "./notes.ts";
import { sampleRun } from "./testdata/sample-report.ts";

const calm = { cpus: 2, cpu_model: "x", kernel: "6", bun: "1", load_average: { start: 0.3, end: 0.9 } };

describe("qualityNotes", () => {
  test("a calm machine sustaining every rate only gets the load-generator note", () => {
    const notes = qualityNotes([sampleRun("uds", 1000, 32, 1, 0.3)], ["uds"], [1000], calm);
    expect(notes.length).toBe(1);
    expect(notes[0]).toMatch(/^the load generator ran in its own process and is not counted; it used about 0\.333 vCPU on this 2-CPU machine/);
  });

  test("a rate not sustained (achieved < 90%) is called saturation, with the generator's lag", () => {
    const r = sampleRun("shm", 5000, 32, 1, 0.4);
    r.achieved_rps = 822;
    r.loadgen.max_send_lag_ms = 679;
    const notes = qualityNotes([r], ["shm"], [5000], calm);
    expect(notes[0]).toBe("shm @ 5000 rps achieved only 822 rps in 1 run(s) (load generator max send lag 679 ms): the machine saturated, so that rate measures an overloaded system");
  });

  test("a load average above the CPU count warns that the figures are noisy", () => {
    const notes = qualityNotes([], ["uds"], [1000], { ...calm, load_average: { start: 13.2, end: 1 } });
    expect(notes).toEqual([expect.stringMatching(/^the machine was busy: 1-minute load average 13\.2 at the start .* on 2 CPUs/)]);
  });
});
