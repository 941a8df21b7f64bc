// Deterministic bundle: same lockfile -> byte-identical dist/ (CI rebuilds and compares).
import { build } from "esbuild";
import { copyFileSync, mkdirSync, rmSync } from "node:fs";

rmSync("dist", { recursive: true, force: true });
mkdirSync("dist");
await build({
  entryPoints: ["src/main.js"],
  outfile: "dist/canvas.js",
  bundle: true,
  minify: true,
  format: "iife",
  target: "es2020",
  legalComments: "eof",
  sourcemap: false,
  logLevel: "warning",
});
copyFileSync("src/index.html", "dist/index.html");
