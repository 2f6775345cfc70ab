#!/bin/bash
# Build what a GPU-machine visit runs and gather it, with the shared libraries the device image
# lacks (our Debian -dev packages, Criterion, fio), into .carry/ (git-ignored; carried by the
# device tool). glibc itself is left out: the device's own (newer) one runs these binaries.
set -euo pipefail
cd "$(dirname "$0")/../.."
make -j2 CUDA=1 build/sluice build/tests/unit build/tests/gpu bench >/dev/null
rm -rf .carry && mkdir -p .carry/bin .carry/lib
cp build/sluice build/tests/unit build/tests/gpu .carry/bin/
for b in build/bench/*; do [ -x "$b" ] && [ -f "$b" ] && cp "$b" .carry/bin/ || true; done
# EXTRA_BINS="SRC:NAME ...": more programs to carry, e.g. an older build to compare against
for x in ${EXTRA_BINS:-}; do cp "${x%%:*}" ".carry/bin/${x##*:}"; done
command -v fio >/dev/null || apt-get install -y -q fio >/dev/null
cp "$(command -v fio)" .carry/bin/
for bin in .carry/bin/*; do
    ldd "$bin" 2>/dev/null | awk '/=> \// {print $3}'
done | sort -u | grep -vE '/(libc|libm|libpthread|libdl|librt|ld-linux[^/]*|libgcc_s|libstdc\+\+|libresolv|libcublas|libcublasLt|libcudart)\.so' |
    while read -r lib; do cp -L "$lib" .carry/lib/; done
# the real tokenizer, for a `sluice run` smoke test on the real-shape model
mkdir -p .carry/share && cp ../shared/deepseek-v3/tokenizer.json .carry/share/
du -sh .carry
# The device tool carries at most 64 MiB with the tree: ship one xz tarball.
tar -C .carry -cJf .carry/pack.txz bin lib share
rm -rf .carry/bin .carry/lib .carry/share
ls -la .carry/pack.txz
