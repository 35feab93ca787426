// Placeholder provider: the shm transport's helper replaces this file with the real one.
import type { TransportProvider } from "../provider.ts";

export const shmProvider: TransportProvider = {
  name: "shm",
  unavailableReason: () => "the shm transport is not built into this version yet",
  offer: () => ({}),
  sidecarSetup: async () => {
    throw new Error("the shm transport is not built into this version yet");
  },
  appAttach: async () => {
    throw new Error("the shm transport is not built into this version yet");
  },
};
