// Placeholder provider: the rpal transport's helper replaces this file with the real one.
import type { TransportProvider } from "../provider.ts";

export const rpalProvider: TransportProvider = {
  name: "rpal",
  unavailableReason: () => "the rpal transport is not built into this version yet",
  offer: () => ({}),
  sidecarSetup: async () => {
    throw new Error("the rpal transport is not built into this version yet");
  },
  appAttach: async () => {
    throw new Error("the rpal transport is not built into this version yet");
  },
};
