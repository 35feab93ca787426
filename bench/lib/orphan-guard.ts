// Bench server and client processes exit when run.ts goes away (Ctrl-C, a crash, a timeout), so an
// aborted bench never leaves a spinning or listening process behind. Checked once a second: one
// getppid per second does not show in per-call figures.
export function exitWhenOrphaned(): void {
  const parent = process.ppid;
  setInterval(() => {
    if (process.ppid !== parent) process.exit(1);
  }, 1000).unref();
}
