// report.html, written from a synthetic report, opened from disk by headless Chromium: every chart is
// laid out (non-empty bounding box) and nothing is fetched.
import { afterEach, expect, test } from "bun:test";
import { writeReport } from "../mesh/ab/report-write.ts";
import { sampleReport } from "../mesh/ab/testdata/sample-report.ts";
import { chartMarks, dumpDom } from "./ab-chromium.ts";
import { TestResources } from "./helpers.ts";

const res = new TestResources();
afterEach(() => res.cleanup());

test("report.html renders all its charts in headless Chromium from a file:// URL", async () => {
  const dir = res.scratchDir("ab-render-");
  const paths = writeReport(dir, sampleReport({ notes: ["<b>not bold</b>"] }));
  const dom = await dumpDom(paths.html);
  expect(chartMarks(dom)).toEqual({ rendered: 8, total: 8 });
  expect(dom).toContain("vCPU per 1,000 rps vs rate");
  expect(dom).toContain("&lt;b&gt;not bold&lt;/b&gt;"); // notes are text, not markup
});
