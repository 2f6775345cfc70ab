#!/bin/bash
# sluice's io_uring reader against fio on the same file, block size and queue depth.
#
# usage: bench/io_vs_fio.sh [FILE] [SIZE]
#   FILE  test file (default /var/tmp/sluice-io-bench.dat; created by `sluice bench io` if missing)
#   SIZE  size of FILE when it is created (default 2G); an existing file is used whole
# env:   SECONDS_PER_RUN (3), REPS (3), QDS ("4 16 64"), SLUICE (build/sluice), OUT (bench/results),
#        MACHINE (a name for the results files; default: hostname), POINTS (override the list),
#        COMMIT (when the tree has no .git).
#
# Each point runs fio (io_uring engine, O_DIRECT) and `sluice bench io` REPS times, alternating
# (fio, sluice, sluice, fio, fio, ...) so drift in the drive or the host hits both alike, and reports
# the median of each and their ratio. Goal: sluice >= 0.95 x fio for 1 MiB and 16 MiB sequential
# reads and random 25 MB chunk reads at qd 4-64.
# Writes $OUT/io-$MACHINE-$DATE.csv (every run) and .md (medians, ratio, verdict), with the
# machine, kernel, compiler, commit and fio version first.
set -euo pipefail
cd "$(dirname "$0")/.."

FILE=${1:-/var/tmp/sluice-io-bench.dat}
SIZE=${2:-2G}
T=${SECONDS_PER_RUN:-3}
REPS=${REPS:-3}
QDS=${QDS:-"4 16 64"}
SLUICE=${SLUICE:-build/sluice}
OUT=${OUT:-bench/results}
MACHINE=${MACHINE:-$(hostname -s 2>/dev/null || echo unknown)}
DATE=$(date +%F)
CHUNK=25001984 # 25 MB (one 4-bit DeepSeek-V3 routed expert) rounded up to 4096, as .sluice stores it

if ! command -v fio >/dev/null; then
    echo "installing fio (Debian package)" >&2
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
    $SUDO apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q fio >/dev/null
fi
command -v python3 >/dev/null || { echo "io_vs_fio.sh: needs python3 to read fio's JSON" >&2; exit 1; }
if [ "$SLUICE" = build/sluice ]; then make -s build/sluice >&2; fi
"$SLUICE" bench io --help >/dev/null 2>&1 || { echo "io_vs_fio.sh: $SLUICE has no 'bench io'" >&2; exit 1; }

# The test file: sluice creates it (random bytes, dropped from the page cache) if missing.
"$SLUICE" bench io "$FILE" --size "$SIZE" --qd 1 --time 0.2 --json >/dev/null
BYTES=$(python3 -c "import os,sys; print(os.path.getsize(sys.argv[1]))" "$FILE")
REGION=$BYTES # the whole file, for both tools

mkdir -p "$OUT"
CSV="$OUT/io-$MACHINE-$DATE.csv"
MD="$OUT/io-$MACHINE-$DATE.md"
FS=$(findmnt -no FSTYPE -T "$FILE" 2>/dev/null || echo "?")
DEV=$(findmnt -no SOURCE -T "$FILE" 2>/dev/null || echo "?")
CPU=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')
COMMIT=${COMMIT:-$(git rev-parse --short HEAD 2>/dev/null || true)}
{
    echo "# machine: $MACHINE ($CPU, $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB)"
    echo "# kernel: $(uname -r)"
    echo "# compiler: $(${CC:-gcc} --version | head -1)"
    echo "# commit: $COMMIT"
    echo "# fio: $(fio --version)"
    echo "# file: $FILE ($FS on $DEV), $REGION bytes used; O_DIRECT; ${T}s a run, $REPS runs each, alternating"
    echo "pattern,bs,qd,rep,fio_gbps,sluice_gbps,fio_p99_us,sluice_p99_us"
} >"$CSV"

fio_run() { # pattern bs qd -> "gbps p99_us"
    local rw=read extra=()
    [ "$1" = chunks ] && rw=randread extra=(--blockalign=4k --norandommap --randrepeat=0)
    fio --name=sluice-cmp --filename="$FILE" --ioengine=io_uring --direct=1 --rw=$rw --bs="$2" \
        --iodepth="$3" --size="$REGION" --runtime="$T" --time_based --numjobs=1 --output-format=json \
        "${extra[@]}" 2>/dev/null |
        python3 -c "
import json,sys
d=json.load(sys.stdin); r=d['jobs'][0]['read']; p=r['clat_ns'].get('percentile',{})
print(r['bw_bytes']/1e9, p.get('99.000000',0)/1e3)"
}

sluice_run() { # pattern bs qd -> "gbps p99_us"
    "$SLUICE" bench io "$FILE" --mode "$1" --bs "$2" --qd "$3" --size "$REGION" --time "$T" --json --direct |
        python3 -c "
import json,sys
d=json.loads(sys.stdin.readline()); print(d['gbps'], d['lat_p99_us'])"
}

POINTS=${POINTS:-}
if [ -z "$POINTS" ]; then
    for qd in $QDS; do POINTS="$POINTS seq:1048576:$qd"; done
    for qd in $QDS; do POINTS="$POINTS seq:16777216:$qd"; done
    for qd in $QDS; do POINTS="$POINTS chunks:$CHUNK:$qd"; done
fi

for p in $POINTS; do
    IFS=: read -r pat bs qd <<<"$p"
    for rep in $(seq 1 "$REPS"); do
        if [ $((rep % 2)) -eq 1 ]; then # swap who goes first each run: no order bias
            read -r fg fp < <(fio_run "$pat" "$bs" "$qd")
            read -r sg sp < <(sluice_run "$pat" "$bs" "$qd")
        else
            read -r sg sp < <(sluice_run "$pat" "$bs" "$qd")
            read -r fg fp < <(fio_run "$pat" "$bs" "$qd")
        fi
        echo "$pat,$bs,$qd,$rep,$fg,$sg,$fp,$sp" >>"$CSV"
        printf '%-7s %9s qd %-3s run %s: fio %6.3f GB/s  sluice %6.3f GB/s  ratio %.3f\n' \
            "$pat" "$bs" "$qd" "$rep" "$fg" "$sg" "$(python3 -c "print($sg/$fg if $fg else 0)")" >&2
    done
done

python3 - "$CSV" "$MD" <<'EOF'
import csv, statistics, sys
rows = [r for r in csv.reader(l for l in open(sys.argv[1]) if not l.startswith('#'))][1:]
head = [l.rstrip('\n') for l in open(sys.argv[1]) if l.startswith('#')]
pts = {}
for pat, bs, qd, rep, fg, sg, fp, sp in rows:
    pts.setdefault((pat, int(bs), int(qd)), []).append((float(fg), float(sg), float(fp), float(sp)))
out = [h.replace('# ', '- ', 1) for h in head]
out += ['', '| pattern | bs | qd | fio GB/s | sluice GB/s | ratio | min ratio | fio p99 us | sluice p99 us |',
        '| --- | --- | --- | --- | --- | --- | --- | --- | --- |']
worst = 9
for (pat, bs, qd), v in pts.items():
    fg = statistics.median(x[0] for x in v); sg = statistics.median(x[1] for x in v)
    ratio = sg / fg if fg else 0
    mn = min(x[1] / x[0] for x in v if x[0])
    worst = min(worst, ratio)
    name = f'{bs >> 20} MiB' if bs % (1 << 20) == 0 else f'{bs / 1e6:.1f} MB'
    out.append(f'| {pat} | {name} | {qd} | {fg:.3f} | {sg:.3f} | {ratio:.3f} | {mn:.3f} | '
               f'{statistics.median(x[2] for x in v):.0f} | {statistics.median(x[3] for x in v):.0f} |')
out += ['', f'Worst median ratio: {worst:.3f} (goal >= 0.95): {"met" if worst >= 0.95 else "NOT met"}.']
open(sys.argv[2], 'w').write('\n'.join(out) + '\n')
print('\n'.join(out))
EOF
echo "wrote $CSV and $MD" >&2
