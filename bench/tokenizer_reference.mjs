// Times js-tiktoken (gpt2 ranks) on the same corpus sample as
// tokenizer_bench.cpp: Moby-Dick chapters, State of the Union speeches and
// the first ten mail shards, read as the loader reads them.
//
// usage: node tokenizer_reference.mjs DATA_DIR
// Prints one JSON line.

import { readFileSync, readdirSync } from "node:fs";
import { createRequire } from "node:module";
import { join, resolve } from "node:path";

const dataDir = process.argv[2];
if (!dataDir) {
  console.error("usage: node tokenizer_reference.mjs DATA_DIR");
  process.exit(2);
}
const require = createRequire(resolve(dataDir, "reference", "node_modules", "x.js"));
const { getEncoding } = require("js-tiktoken");
const encoding = getEncoding("gpt2");
const decoder = new TextDecoder("utf-8");

const sorted = (folder, extension) =>
  readdirSync(join(dataDir, folder))
    .filter((name) => name.endsWith(extension))
    .sort()
    .map((name) => join(dataDir, folder, name));

const isBlank = (text) => /^[ \t\n\r\v\f]*$/.test(text);
const documents = [];
for (const path of [...sorted("moby", ".txt"), ...sorted("sotu", ".txt")]) {
  const text = decoder.decode(readFileSync(path));
  if (!isBlank(text)) documents.push(text);
}
for (const path of sorted("mail", ".jsonl").slice(0, 10)) {
  const lines = decoder.decode(readFileSync(path)).split("\n");
  for (const line of lines) {
    if (line.trim() === "") continue;
    const text = JSON.parse(line).text;
    if (typeof text === "string" && !isBlank(text)) documents.push(text);
  }
}

const encoder = new TextEncoder();
let bytes = 0;
for (const doc of documents) bytes += encoder.encode(doc).length;

let tokens = 0;
const start = process.hrtime.bigint();
for (const doc of documents) tokens += encoding.encode(doc, [], []).length;
const seconds = Number(process.hrtime.bigint() - start) / 1e9;

console.log(
  JSON.stringify({
    bench: "tokenizer_reference",
    documents: documents.length,
    bytes,
    tokens,
    seconds: Number(seconds.toFixed(4)),
    mb_per_s: Number((bytes / 1e6 / seconds).toFixed(3)),
  }),
);
