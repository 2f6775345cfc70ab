#!/bin/bash
# Run on the lent GPU machine: builds the transformers fixtures and returns them as tarballs in $OUT.
set -euo pipefail
export PYTHONUNBUFFERED=1
python3 -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__)'
rm -rf /tmp/fx && mkdir -p /tmp/fx
python3 tools/make_reference.py /tmp/fx 2>&1 | tee $OUT/make_reference.log
rm -rf /tmp/fx/.tmp
(cd /tmp/fx && tar czf $OUT/fixtures-a.tgz tiny-a-* && tar czf $OUT/fixtures-b.tgz tiny-b-*)
T=$(python3 -c 'import transformers, os; print(os.path.dirname(transformers.__file__))')
tar czf $OUT/hf-src.tgz -C $T models/deepseek_v3 modeling_rope_utils.py integrations/ 2>/dev/null || tar czf $OUT/hf-src.tgz -C $T models/deepseek_v3 modeling_rope_utils.py
ls -la $OUT
