// Which code points each regex class matches in HF tokenizers (Oniguruma) and in JavaScript.
// Writes lines "CLASS ENGINE lo-hi ..." of matching ranges to stdout.
import hf from "tokenizers";
const classes = { L: "\\p{L}", M: "\\p{M}", N: "\\p{N}", P: "\\p{P}", S: "\\p{S}", s: "\\s" };
let all = [];
for (let c = 0; c <= 0x10ffff; c++) if (c < 0xd800 || c > 0xdfff) all.push(c);
const text = String.fromCodePoint(...all.slice(0, 1)) && all.map((c) => String.fromCodePoint(c)).join("");
function ranges(set) {
  const out = []; let lo = -1, prev = -2;
  for (const c of all) {
    if (set.has(c)) { if (c !== prev + 1 || lo < 0) { if (lo >= 0) out.push([lo, prev]); lo = c; } prev = c; }
  }
  if (lo >= 0) out.push([lo, prev]);
  return out;
}
for (const [name, re] of Object.entries(classes)) {
  const tj = { version: "1.0", added_tokens: [], normalizer: null,
    pre_tokenizer: { type: "Split", pattern: { Regex: re + "+" }, behavior: "Removed", invert: false },
    post_processor: null, decoder: null, model: { type: "BPE", vocab: {}, merges: [] } };
  const t = hf.Tokenizer.fromString(JSON.stringify(tj));
  const kept = new Set();
  for (const [s] of t.getPreTokenizer().preTokenizeString(text)) for (const ch of s) kept.add(ch.codePointAt(0));
  const hfset = new Set(all.filter((c) => !kept.has(c)));
  const jre = new RegExp("^" + re + "$", "u");
  const jsset = new Set(all.filter((c) => jre.test(String.fromCodePoint(c))));
  const fmt = (s) => ranges(s).map(([a, b]) => a.toString(16) + "-" + b.toString(16)).join(" ");
  console.log(name, "hf", fmt(hfset));
  console.log(name, "js", fmt(jsset));
}
