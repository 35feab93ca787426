// A stand-in app: connects to MESH_SOCKET and stays until SIGTERM. FAKE_APP_MODE=crash exits 1 at once.
if (process.env.FAKE_APP_MODE === "crash") {
  console.error("fake app: crashing on purpose");
  process.exit(1);
}
await Bun.connect({ unix: process.env.MESH_SOCKET!, socket: { data: () => {} } });
console.error(`fake app ${process.env.MESH_POD} connected over ${process.env.MESH_TRANSPORT}`);
setInterval(() => {}, 1 << 30);
process.on("SIGTERM", () => process.exit(0));
export {};
