import { defineConfig } from "vitest/config";
import preact from "@preact/preset-vite";

// The Tauri crate (src-tauri) embeds ui/dist at compile time
// (`frontendDist: "../ui/dist"`), so run `npm run build` before `cargo build`.
export default defineConfig({
  plugins: [preact()],
  base: "./",
  clearScreen: false,
  server: { port: 5173, strictPort: true },
  build: {
    outDir: "dist",
    emptyOutDir: true,
    target: "es2021",
    // No inline scripts or data: modules: the CSP is `script-src 'self'`.
    assetsInlineLimit: 0,
    modulePreload: { polyfill: false },
    sourcemap: false,
  },
  test: {
    environment: "node",
    include: ["src/**/*.test.ts"],
  },
});
