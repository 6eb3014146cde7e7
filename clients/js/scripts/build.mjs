// Builds dist/ (`npm run build`; a test checks the committed dist/ equals a fresh build):
//   index.js                   the ES module (Node >= 18, bundlers), `ws` left external
//   tidemark-client.browser.js one script for a page: `window.Tidemark.TidemarkClient`
//   *.d.ts                     the types, from tsc
// Usage: node scripts/build.mjs <output directory>
import { execFileSync } from "node:child_process";
import { rm } from "node:fs/promises";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { build } from "esbuild";

const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..");
const out = process.argv[2];
if (!out) throw new Error("usage: node scripts/build.mjs <output directory>");
const outdir = resolve(out);

await rm(outdir, { recursive: true, force: true });
const common = {
  entryPoints: [join(ROOT, "src", "index.ts")],
  bundle: true,
  target: "es2020",
  external: ["ws"],
  legalComments: "none",
  logLevel: "warning",
};
await build({ ...common, format: "esm", platform: "neutral", outfile: join(outdir, "index.js") });
await build({
  ...common, format: "iife", platform: "browser", globalName: "Tidemark", minify: true,
  outfile: join(outdir, "tidemark-client.browser.js"),
});
execFileSync(process.execPath, [join(ROOT, "node_modules", "typescript", "bin", "tsc"),
  "-p", join(ROOT, "tsconfig.json"), "--outDir", outdir], { stdio: "inherit" });
