// Writes tests/fixtures/tokenizer/corpus.jsonl: the texts the golden ids are made for. Hand-picked
// lines by theme, then generated ones (digit runs, whitespace runs, random Unicode) from a fixed
// seed, so the file is reproducible. Run from this folder: node make-corpus.mjs
import { writeFileSync } from "node:fs";

const lines = [];
const add = (...texts) => { for (const t of texts) lines.push(t); };

// ---- plain text, many scripts ----------------------------------------------------------------
add(
  "",
  "Hello, world!",
  "Hello, my dog is cute",
  "The quick brown fox jumps over the lazy dog.",
  "  leading spaces", "trailing spaces   ", "   both   ", " ", "x",
  "我爱北京天安门，天安门上太阳升。",
  "人工智能正在改变世界。深度学习模型需要大量的数据和计算资源。",
  "繁體中文：臺灣的夜市小吃非常有名，例如滷肉飯和珍珠奶茶。",
  "日本語の文章です。東京は日本の首都であり、人口は約1400万人です。",
  "ひらがなとカタカナと漢字が混ざった文。ｶﾀｶﾅ（半角）もあります。",
  "ラーメン、寿司、天ぷら——どれが好きですか？",
  "한국어 문장입니다. 서울은 대한민국의 수도입니다.",
  "안녕하세요! 오늘 날씨가 정말 좋네요 ㅋㅋㅋ",
  "مرحبا بالعالم! هذه جملة باللغة العربية.",
  "اللُّغَةُ العَرَبِيَّةُ جَمِيلَةٌ، أَلَيْسَ كَذَلِكَ؟",
  "٠١٢٣٤٥٦٧٨٩ رقم الهاتف ٠٥٥١٢٣٤٥٦٧",
  "שלום עולם! זה משפט בעברית.",
  "Привет, мир! Это предложение на русском языке.",
  "Съешь же ещё этих мягких французских булок, да выпей чаю.",
  "Україна — це країна в Східній Європі. Ґанок, їжак, єнот.",
  "Српски: Ђорђе, Љубав, Њива, Џеп.",
  "नमस्ते दुनिया! यह हिंदी में एक वाक्य है।",
  "क्षत्रिय, ज्ञान, श्री, द्वार — संयुक्ताक्षर।",
  "ภาษาไทยไม่มีการเว้นวรรคระหว่างคำ",
  "Ελληνικά: Καλημέρα κόσμε! Η γλώσσα είναι όμορφη.",
  "Tiếng Việt có dấu: Xin chào, thế giới! Đường phố Hà Nội.",
  "Tiếng Việt (NFD): Tiếng Việt",
  "தமிழ் மொழி மிகவும் பழமையானது.",
  "বাংলা ভাষা সুন্দর।",
  "Ελληνικά, русский, 中文, 日本語, 한국어, العربية, हिन्दी — mixed.",
  "Hello世界123мир456عالم",
  "café naïve résumé façade jalapeño Ångström",
  "cafe\u0301 e\u0301 a\u0308 n\u0303 — combining marks",
  "Zalgo: Z̴̡̪̫͖̥̔̿̃̈̏̎͘͜͝ą̷̧̛͎͔̮̫̲̳̐̍͆̎̀͆͑l̷̢̜͖̪̙͓̿̐̋͊̕g̴̨̛̹̺͙͋̿̇̔̎̈́̚͝ó̶̢̨̡̙̩̼͉̗̀̿͗̈́",
  "ſ ß ẞ ﬁ ﬂ ﬀ — ligatures and long s",
  "Ｆｕｌｌｗｉｄｔｈ　ＡＳＣＩＩ　１２３　！？",
  "𝐁𝐨𝐥𝐝 𝑰𝒕𝒂𝒍𝒊𝒄 𝕯𝖔𝖚𝖇𝖑𝖊 — mathematical letters",
  "𠀀𠀁𠀂 𪚥 𰻞 — CJK extension B and beyond",
  "ᚠᛇᚻ᛫ᛒᛦᚦ — runes; ꯃꯤꯇꯩ — Meitei; ᓀᐦᐃᔭᐍᐏᐣ — syllabics",
);

// ---- emoji ------------------------------------------------------------------------------------
add(
  "I love pizza 🍕🍕🍕!",
  "👨‍👩‍👧‍👦 family, 👩‍💻 technologist, 🧑‍🚀 astronaut",
  "👍 👍🏻 👍🏼 👍🏽 👍🏾 👍🏿",
  "🇯🇵🇺🇸🇫🇷🇩🇪🇨🇳🇰🇷 flags",
  "🏳️‍🌈 🏴‍☠️ 🏴󠁧󠁢󠁳󠁣󠁴󠁿 tag sequences",
  "1️⃣ 2️⃣ #️⃣ *️⃣ keycaps",
  "☺️ ☺︎ ❤️ ❤ variation selectors",
  "👩🏽‍❤️‍💋‍👨🏻 kiss with skin tones",
  "😀😃😄😁😆😅🤣😂🙂🙃😉😊😇",
  "text😀text😀😀text",
  "🤷‍♂️🤷‍♀️🙆🏾‍♂️",
);

// ---- code -------------------------------------------------------------------------------------
add(
  "int main(void) {\n    printf(\"hello, %s\\n\", name);\n    return 0;\n}",
  "#include <stdio.h>\n#define MAX(a, b) ((a) > (b) ? (a) : (b))",
  "def fib(n):\n    if n < 2:\n        return n\n    return fib(n - 1) + fib(n - 2)\n",
  "class Foo:\n\tdef __init__(self, x: int = 42) -> None:\n\t\tself.x = x  # tab indent\n",
  "const sum = (a, b) => a + b; // arrow\nif (x !== undefined && y === null) { console.log(`sum=${sum(x, y)}`); }",
  "fn main() -> Result<(), Box<dyn std::error::Error>> {\n    let v: Vec<u8> = vec![1, 2, 3];\n    Ok(())\n}",
  "func (s *Server) Handle(w http.ResponseWriter, r *http.Request) {\n\tdefer r.Body.Close()\n}",
  "SELECT id, name FROM users WHERE age >= 18 AND name LIKE '%son' ORDER BY id DESC;",
  "<!DOCTYPE html>\n<html lang=\"en\"><body><div class=\"a b\">&lt;hi&gt;&amp;</div></body></html>",
  "{\"key\": [1, 2.5, -3e10, true, null], \"nested\": {\"a\": \"b\"}}",
  "for f in *.txt; do echo \"$f\" | sed -e 's/a/b/g' > /dev/null 2>&1; done",
  "\\documentclass{article}\n\\begin{equation} E = mc^2 \\quad \\int_0^\\infty e^{-x^2} dx \\end{equation}",
  "/^(?:[a-z0-9!#$%&'*+/=?^_`{|}~-]+)@example\\.com$/i",
  "x+=1;y-=2;z*=3;w/=4;a%=5;b**=6;c//=7;d<<=8;e>>=9;f&=1;g|=2;h^=3",
  "    indented four\n        indented eight\n\t\ttabs\n",
  "a=b;c==d;e===f;g!=h;i!==j;k<=l;m>=n;o->p;q=>r;s::t;u...v;w?.x;y??z",
  "https://example.com/path/to/page?query=value&other=123#fragment",
  "user@example.com, first.last+tag@sub.domain.org",
  "git commit -m \"Fix bug #1234: handle CRLF in parser\" && git push origin main",
  "0x7fffffff 0b1010 0o777 1_000_000 3.14159 6.022e23 -0.0 1e-9",
);

// ---- contractions and punctuation -------------------------------------------------------------
add(
  "don't won't can't shouldn't it's he's she's they're we're you're I'm I've we'll he'd",
  "DON'T IT'S THEY'RE I'M I'VE WE'LL HE'D",
  "It’s a curly apostrophe, isn’t it? ‘quoted’ “double”",
  "'s 't 're 've 'm 'll 'd",
  "rock 'n' roll, o'clock, ma'am, y'all, '90s",
  "Wait... what?!?! No way!!! ???",
  "—– -- --- ... …… ·•◦‣",
  "«Bonjour» „Guten Tag“ 「こんにちは」『引用』【注意】〈括弧〉",
  "؟ ، ؛ ۔ । ॥ 。 、 ！ ？ ： ；",
  "((([[[{{{}}}]]])))",
  "!!!@@@###$$$%%%^^^&&&***",
  "a.b,c;d:e!f?g",
  ".Net .NET ,and ;then :colon !bang ?what -dash _under",
  "#hashtag @mention $100 %20 &amp *bold* _it_ ~strike~ `code`",
  "~~~ ``` ''' \"\"\" <<< >>> ||| \\\\\\ ///",
  "© ® ™ ° ± × ÷ § ¶ € £ ¥ ₹ ₿ ∞ ≈ ≠ ≤ ≥ √ ∑ ∏ ∫ ∂ ∇",
  "→ ← ↑ ↓ ⇒ ⇔ ★ ☆ ♠ ♣ ♥ ♦ ✓ ✗ ☐ ☑",
);

// ---- special-token text --------------------------------------------------------------------------
const specials = [
  "<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", "<｜▁pad▁｜>", "<｜fim▁hole｜>", "<｜fim▁begin｜>",
  "<｜fim▁end｜>", "<｜User｜>", "<｜Assistant｜>", "<|EOT|>", "<｜tool▁calls▁begin｜>", "<｜tool▁calls▁end｜>",
  "<｜tool▁call▁begin｜>", "<｜tool▁call▁end｜>", "<｜tool▁outputs▁begin｜>", "<｜tool▁outputs▁end｜>",
  "<｜tool▁output▁begin｜>", "<｜tool▁output▁end｜>", "<｜tool▁sep｜>",
];
for (const s of specials) add(s, "x" + s + "y", " " + s + " ");
add(
  "<｜begin▁of▁sentence｜><｜User｜>Hello!<｜Assistant｜>Hi there.<｜end▁of▁sentence｜>",
  "<｜begin▁of▁sentence｜>You are a helpful assistant.<｜User｜>What is 2+2?<｜Assistant｜><think>\n2+2=4\n</think>\n\n4<｜end▁of▁sentence｜>",
  "<think>reasoning</think>answer",
  "<think>\n</think>",
  "<｜User｜><｜User｜><｜Assistant｜><｜Assistant｜>",
  "<｜place▁holder▁no▁0｜><｜place▁holder▁no▁17｜><｜place▁holder▁no▁799｜>",
  "<｜place▁holder▁no▁800｜> (not a token) <｜place▁holder▁no▁1｜>",
  "<｜User｜ broken <｜User <｜User｜",
  "<|User|> ascii bars are not the token <|EOT|> but this is",
  "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>get_weather\n```json\n{\"city\": \"Paris\"}\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜>",
  "<<｜User｜>>",
  "<｜fim▁begin｜>def f(x):\n    <｜fim▁hole｜>\n    return y<｜fim▁end｜>",
  "<｜end▁of▁sentence｜>\n\n<｜begin▁of▁sentence｜>",
  "prefix<｜begin▁of▁sentence｜>123<｜end▁of▁sentence｜>456",
);

// ---- CRLF and whitespace specifics -----------------------------------------------------------------
add(
  "line one\r\nline two\r\nline three\r\n",
  "\r\n", "\r\n\r\n", "\r", "\n", "\n\n\n", "\r\r\n\n",
  "a\r\n  b", "a  \r\n\r\n  b", "a\r\n\tb", "a \r b", "end.\r\n",
  "Hello.\r\nHow are you?\r\n\r\nFine.",
  "\t", "\t\t\t", " \t \t ", "\t\n\t\n",
  "a\u00a0b\u00a0\u00a0c", "a\u3000b\u3000\u3000c", "a\u2028b\u2029c", "a\u2003\u2009b",
  "\u00a0 lead nbsp", "trail nbsp \u00a0",
  "a\u0085b\u0085\u0085c", "x\u0085\u0085", "\u0085 y",
  "a\ufeffb", "\ufeffbom at start", "x \ufeff\ufeff y",
  "a\u180eb", "a\u200bb\u200cc\u200dd", "a\u2060b",
  // where Oniguruma's \s (has U+0085, lacks U+FEFF) and JavaScript's cut differently
  "a\ufeff\nb", "\ufeff\r\n", "x\ufeff\ufeff\n\ny", "a\u0085\nb", "\u0085\u0085\n\n", "x \u0085\r\n",
);

// ---- code points newer than Unicode 14 (PCRE2 10.42's tables) --------------------------------------
add(
  "Kawi digits 𑽐𑽑𑽒𑽓𑽔 and letters 𑼄𑼅𑼆", // Unicode 15
  "Nag Mundari 𞓐𞓑𞓒 digits 𞓰𞓱𞓲𞓳𞓴𞓵𞓶", // Unicode 15
  "CJK Ext H 𱍐𱍑𱍒 and Ext I 𮯰𮯱", // Unicode 15, 15.1
  "Todhri 𐗀𐗁𐗂 Garay 𐵊𐵋 digits 𐵀𐵁𐵂𐵃 Kirat Rai 𖵀𖵁 digits 𖵰𖵱𖵲𖵳𖵴", // Unicode 16
  "Sunuwar 𑯀𑯁 digits 𑯰𑯱𑯲𑯳 Ol Onal 𞗐𞗑 Tulu-Tigalari 𑎀𑎁", // Unicode 16
  "symbols for legacy computing 🯰🯱 𜰀𜰁𜰂 and Ᲊᲊ ꟋꟌ", // Unicode 13, 16
);

// ---- digit runs: the pre-tokenizer cuts \p{N} into groups of at most three -------------------------
const digits = "12345678901234567890";
for (let n = 1; n <= 20; n++) {
  const d = digits.slice(0, n);
  add(d, "abc" + d + "def", " " + d + " ", "v" + d + "." + d);
}
add(
  "00000000000000000000", "99999999999999999999", "3.14159265358979323846",
  "1,234,567.89", "1 234 567", "2024-01-15T12:34:56Z", "+1 (555) 123-4567",
  "١٢٣٤٥٦٧٨٩٠١٢", "१२३४५६७८९०", "１２３４５６７", "²³¹⁴ ½¼¾ ⅓⅔", "ⅠⅡⅢⅣⅫ ⅻ", "①②③④⑤⑥⑦",
  "𝟘𝟙𝟚𝟛𝟜𝟝", "x²+y²=z²", "a1b22c333d4444e55555",
);

// ---- whitespace runs --------------------------------------------------------------------------------
const ws = [" ", "  ", "   ", "    ", "        ", "\t", "\t\t", " \t", "\t ", "\n", "\n\n", " \n", "\n ", " \n ",
  "  \n\n  ", "\t\n", "\r\n", " \r\n", "\r\n ", "\n\t\t", "    \n    \n"];
for (const w of ws) add("a" + w + "b", w + "b", "a" + w, w);
for (let n = 1; n <= 16; n++) add("x" + " ".repeat(n) + "y", "x" + "\n".repeat(n) + "y");

// ---- long words -----------------------------------------------------------------------------------
add(
  "a".repeat(1000),
  "ab".repeat(300),
  "supercalifragilisticexpialidocious".repeat(20),
  "Pneumonoultramicroscopicsilicovolcanoconiosis Donaudampfschifffahrtsgesellschaftskapitän",
  "中".repeat(300),
  "的是不了人我在有他这".repeat(30),
  "あ".repeat(200) + "ア".repeat(200),
  "😀".repeat(100),
  "=".repeat(300), "-".repeat(200) + "\n" + "#".repeat(100),
  " ".repeat(500) + "x", "\n".repeat(200), "\t".repeat(100) + "end",
  "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==",
  "deadbeefcafebabe0123456789abcdef".repeat(8),
  "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt ut labore et dolore magna aliqua. ".repeat(4),
);

// ---- generated: random Unicode, random ASCII soup, random script mixes ---------------------------------
let seed = 0x5eed1234n;
function rnd() { // splitmix64, fixed seed: the corpus is reproducible
  seed = (seed + 0x9e3779b97f4a7c15n) & 0xffffffffffffffffn;
  let z = seed;
  z = ((z ^ (z >> 30n)) * 0xbf58476d1ce4e5b9n) & 0xffffffffffffffffn;
  z = ((z ^ (z >> 27n)) * 0x94d049bb133111ebn) & 0xffffffffffffffffn;
  return Number((z ^ (z >> 31n)) & 0xffffffffn);
}
const pick = (a) => a[rnd() % a.length];
function cp() { // a code point from a random plane region, never a surrogate
  const r = rnd() % 10;
  let c;
  if (r < 2) c = 0x20 + (rnd() % 0x60);
  else if (r < 4) c = 0x80 + (rnd() % 0x780);
  else if (r < 7) c = 0x800 + (rnd() % (0x10000 - 0x800));
  else if (r < 9) c = 0x10000 + (rnd() % 0x30000);
  else c = 0x10000 + (rnd() % 0x100000);
  if (c >= 0xd800 && c <= 0xdfff) c -= 0x800;
  return String.fromCodePoint(c);
}
for (let i = 0; i < 120; i++) {
  let s = "";
  const n = 1 + (rnd() % 40);
  for (let k = 0; k < n; k++) s += rnd() % 5 === 0 ? pick([" ", "  ", "\n", "\t", "1", "12", "a", "'s", "!"]) : cp();
  add(s);
}
const ascii = " \t\n\r!\"#$%&'()*+,-./0123456789:;<=>?@ABCZabcz[\\]^_`{|}~";
for (let i = 0; i < 60; i++) {
  let s = "";
  const n = 1 + (rnd() % 60);
  for (let k = 0; k < n; k++) s += ascii[rnd() % ascii.length];
  add(s);
}
const chunks = ["hello", " world", "中文", "日本語", "カタカナ", "한국어", "русский", "عربي", "हिन्दी", "😀", "👍🏽",
  "123", "4567", " ", "\n", "\r\n", "\t", "'s", "'re", "...", "!?", "<｜User｜>", "<think>", "café", "ß", "٣", "\u00a0"];
for (let i = 0; i < 80; i++) {
  let s = "";
  const n = 1 + (rnd() % 12);
  for (let k = 0; k < n; k++) s += pick(chunks);
  add(s);
}

const out = lines.map((text) => JSON.stringify({ text })).join("\n") + "\n";
writeFileSync(new URL("../../tests/fixtures/tokenizer/corpus.jsonl", import.meta.url), out);
console.log(`wrote tests/fixtures/tokenizer/corpus.jsonl: ${lines.length} lines, ${out.length} chars`);
