// Deterministic bundle: same lockfile -> byte-identical dist/ (CI rebuilds and compares).
import { build } from "esbuild";
import { copyFileSync, mkdirSync, rmSync } from "node:fs";

// NiiVue reads OME-Zarr through zarrita, which imports numcodecs' blosc, lz4 and zstd codecs
// (WebAssembly inlined as text: 1.4 MB of the 2.3 MB bundle) when a zarr array needs one. The
// canvas is only ever given NIfTI bytes, so those imports resolve to a module that says so:
// every page then downloads, decompresses and parses 60 % less script.
const noZarrCodecs = {
  name: "no-zarr-codecs",
  setup(b) {
    b.onResolve({ filter: /^numcodecs\/(blosc|lz4|zstd)$/ }, (args) => ({
      path: args.path,
      namespace: "no-zarr-codecs",
    }));
    b.onLoad({ filter: /.*/, namespace: "no-zarr-codecs" }, (args) => ({
      contents: `export default { fromConfig() { throw new Error(
        "medseg canvas: the ${args.path} codec is not bundled (NIfTI only)"); } };`,
    }));
  },
};

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
  plugins: [noZarrCodecs],
});
copyFileSync("src/index.html", "dist/index.html");
