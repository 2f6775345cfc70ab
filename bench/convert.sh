#!/bin/bash
# Convert throughput: `sluice convert` on a synthetic Hugging Face DeepSeek-V3 checkpoint with the
# real shapes (hidden 7168, vocab 129280, MLA dims, 256 experts of width 2048; bench/synth_hf.c)
# and few layers, laid out as the official fp8 release is.
#
# usage: bench/convert.sh [WORKDIR]      (default /var/tmp/sluice-convert-bench; needs ~3x the
#                                         source size free: the source plus the largest output)
# env:   LAYERS (2), DENSE (1), EXPERTS (256): the synthetic model (2 layers: one dense, one MoE
#        with 256 experts, ~15.6 GB fp8); SRC_FMT (fp8 | bf16); QUANTS ("source q8 q4"): the
#        --quant runs, "source" meaning none; THREADS (all cores); SLUICE (build/sluice);
#        OUT (bench/results); MACHINE (hostname); KEEP=1 keeps the source for another run;
#        VOCAB (129280; smaller makes the run measure the layers alone, as in the 671B model where
#        embedding and lm_head are 0.5% of the bytes); DROP=0 keeps the page cache (source read
#        from RAM); DST_DIR (WORKDIR; /dev/shm takes the output disk out of the measurement);
#        TAG names this configuration in the results file name.
#
# Each run: sync and drop the page cache when allowed (else the source is read from RAM: the
# report says which), run the converter, sample its resident memory (anonymous: buffers; file:
# the mmapped source) every 0.2 s, then `sluice inspect --verify` the output. GB/s are the
# script's own: source bytes (the shards' sizes) and output bytes over wall time, fsync and
# rename included. Writes $OUT/convert-$MACHINE-$DATE.md, machine, date and commit first.
set -euo pipefail
cd "$(dirname "$0")/.."

calc() { awk "BEGIN {print $*}"; }
now() { date +%s.%N; }

WORK=${1:-/var/tmp/sluice-convert-bench}
LAYERS=${LAYERS:-2}
DENSE=${DENSE:-1}
EXPERTS=${EXPERTS:-256}
SRC_FMT=${SRC_FMT:-fp8}
VOCAB=${VOCAB:-129280}
DROP=${DROP:-1}
QUANTS=${QUANTS:-"source q8 q4"}
THREADS=${THREADS:-$(nproc)}
SLUICE=${SLUICE:-build/sluice}
OUT=${OUT:-bench/results}
MACHINE=${MACHINE:-$(hostname -s 2>/dev/null || echo unknown)}
DATE=$(date +%F)
COMMIT=$(git rev-parse --short HEAD 2>/dev/null || echo "${SL_BENCH_COMMIT:-unknown}")
DIRTY=$(git status --porcelain 2>/dev/null | grep -q . && echo " (with uncommitted changes)" || true)

if [ "$SLUICE" = build/sluice ]; then make -s CUDA=0 build/sluice >&2; fi
mkdir -p build/bench "$WORK" "$OUT"
gcc -O2 -std=c11 -Wall -Wextra -D_GNU_SOURCE -pthread bench/synth_hf.c -lm -o build/bench/synth_hf

SRC=$WORK/src-$SRC_FMT-L$LAYERS-D$DENSE-E$EXPERTS-V$VOCAB
DST_DIR=${DST_DIR:-$WORK}
if [ ! -f "$SRC/model.safetensors.index.json" ]; then
    t0=$(now)
    build/bench/synth_hf "$SRC" --layers "$LAYERS" --dense "$DENSE" --experts "$EXPERTS" --vocab "$VOCAB" \
        $([ "$SRC_FMT" = bf16 ] && echo --bf16) >&2
    echo "generated in $(calc "$(now) - $t0") s" >&2
fi
SRC_BYTES=$(stat -c %s "$SRC"/*.safetensors | awk '{s += $1} END {print s}')
N_SHARDS=$(ls "$SRC"/*.safetensors | wc -l)

drop_caches() {
    sync
    if [ "$DROP" = 0 ]; then echo "in page cache"; return; fi
    if echo 3 >/proc/sys/vm/drop_caches 2>/dev/null; then echo cold; else echo "in page cache"; fi
}

# Peak RssAnon / RssFile (kB) of PID while it runs.
watch_rss() {
    local pid=$1 anon=0 file=0 a f
    while kill -0 "$pid" 2>/dev/null; do
        a=$(awk '/^RssAnon/ {print $2}' /proc/"$pid"/status 2>/dev/null || echo 0)
        f=$(awk '/^RssFile/ {print $2}' /proc/"$pid"/status 2>/dev/null || echo 0)
        [ -n "$a" ] && [ "$a" -gt "$anon" ] && anon=$a
        [ -n "$f" ] && [ "$f" -gt "$file" ] && file=$f
        sleep 0.2
    done
    echo "$anon $file"
}

ROWS=""
for q in $QUANTS; do
    DST=$DST_DIR/out-$q.sluice
    rm -f "$DST" "$DST.tmp"
    cache=$(drop_caches)
    args=(); [ "$q" != source ] && args=(--quant "$q")
    t0=$(now)
    "$SLUICE" convert "$SRC" "$DST" "${args[@]}" --threads "$THREADS" >"$WORK/convert-$q.log" 2>&1 &
    pid=$!
    rss=$(watch_rss $pid)
    wait $pid || { cat "$WORK/convert-$q.log" >&2; exit 1; }
    t1=$(now)
    dst_bytes=$(stat -c %s "$DST")
    secs=$(calc "$t1 - $t0")
    vcache=$(drop_caches)
    v0=$(now)
    "$SLUICE" inspect "$DST" --verify --threads "$THREADS" >"$WORK/inspect-$q.log" 2>&1
    vsecs=$(calc "$(now) - $v0")
    read -r anon file <<<"$rss"
    summary=$(tr "\r" "\n" <"$WORK/convert-$q.log" | grep "zstd saved" | tail -1)
    saved=$(sed -n 's/.*zstd saved \([0-9.]*%\).*/\1/p' <<<"$summary")
    row=$(printf "| %s | %.2f | %.2f | %.1f | %.2f | %.2f | %s | %.2f | %.2f | %s | %.1f (%s) | %.2f |" \
        "$q" "$(calc "$SRC_BYTES/1e9")" "$(calc "$dst_bytes/1e9")" "$secs" \
        "$(calc "$SRC_BYTES/1e9/$secs")" "$(calc "$dst_bytes/1e9/$secs")" "$saved" \
        "$(calc "$anon/1e6")" "$(calc "$file/1e6")" "$cache" "$vsecs" "$vcache" \
        "$(calc "$dst_bytes/1e9/$vsecs")")
    echo "$row" >&2
    ROWS+="$row"$'\n'
    { tr '\r' '\n' <"$WORK/convert-$q.log" | grep -E '^(time|.*chunks, .* weights)' || true
      grep -A6 '^kind' "$WORK/inspect-$q.log" || true; } >"$WORK/kinds-$q.txt"
    rm -f "$DST"
done
[ "${KEEP:-0}" = 1 ] || rm -rf "$SRC"

MD=$OUT/convert-$MACHINE-$DATE${TAG:+-$TAG}.md
{
    echo "# sluice convert throughput — $MACHINE, $DATE"
    echo
    echo "- machine: $MACHINE; $(lscpu 2>/dev/null | sed -n 's/^Model name: *//p' | head -1), $(nproc) cores," \
         "$(awk '/MemTotal/ {printf "%.0f GB", $2/1e6}' /proc/meminfo) RAM; kernel $(uname -r)"
    echo "- source in $WORK on $(df -T "$WORK" | awk 'NR==2 {print $2 " (" $1 ")"}'); output in" \
         "$DST_DIR on $(df -T "$DST_DIR" | awk 'NR==2 {print $2 " (" $1 ")"}')"
    echo "- date: $DATE; commit: $COMMIT$DIRTY; compiler: $(gcc --version | head -1)"
    echo "- source: synthetic DeepSeek-V3 shapes (bench/synth_hf.c), $SRC_FMT, $LAYERS layers" \
         "($DENSE dense), $EXPERTS experts, vocab $VOCAB, $(calc "$SRC_BYTES/1e9") GB in $N_SHARDS shards;" \
         "threads: $THREADS"
    echo
    echo "GB/s = bytes / wall seconds of the whole command (plan, read, recode, zstd level 3, write," \
         "fsync, rename). Peak RSS sampled every 0.2 s: anonymous (buffers in flight) and file" \
         "(mmapped source pages, which the kernel can drop)."
    echo
    echo "| --quant | source GB | output GB | seconds | GB/s read | GB/s written | zstd saved |" \
         "peak anon RSS GB | peak file RSS GB | source | verify s (cache) | verify GB/s |"
    echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
    printf "%s" "$ROWS"
    echo
    for q in $QUANTS; do
        echo "convert summary and inspect, --quant $q:"
        echo '```'
        cat "$WORK/kinds-$q.txt"
        echo '```'
    done
} >"$MD"
echo "wrote $MD" >&2
