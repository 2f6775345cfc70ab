#!/usr/bin/env python3
"""How far bf16 activations move the fixtures' logits in transformers itself: the independent
oracle for the tolerance of sluice's bf16-activation mode (cuda/cuda.h, sl_cuda_set_activations).

For each fixture in tests/fixtures (made by tools/make_reference.py), the model is rebuilt in
transformers from the fixture's own safetensors (fp8 weights dequantized as q * scale_inv, as the
reference was), and the fixture's sequence (prompt + greedy[:-1]) is run three ways:
  fp32        must give logits.f32 back (checks the rebuild);
  bf16-inputs fp32 model, every linear layer's input rounded to bf16 (nearest even) where it is
              read: what sluice's bf16 mode does in its many-token matrix products;
  sluice-bf16 fp32 model, a linear layer's input rounded to bf16 exactly where sluice's CUDA
              backend rounds it in bf16 mode: every matrix but kv_b (which sluice widens to f32),
              when more rows than its format's GEMV takes (bf16 6, fp8 4) are multiplied at once;
  bf16        the model cast to bfloat16 throughout (what "running the reference in bf16" means).
and sluice-bf16 once more in fp64 between the roundings, against the fp32 run: the floor that
fp32's own rounding noise sets for any comparison of two bf16-mode runs on the fixture.
It prints, per fixture and way, the worst and median relative L2 of the logits rows against
logits.f32, and writes the bf16-inputs and sluice-bf16 logits to
OUTDIR/<fixture>-logits-{bf16-inputs,sluice-bf16}.f32.

    python3 tools/bf16_reference.py tests/fixtures OUTDIR
"""
import json
import os
import sys

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from transformers import DeepseekV3ForCausalLM

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_reference as mr  # noqa: E402  (CONFIGS, hf_config, load_into_transformers)


def fixture_weights(d):
    """The fixture's tensors as fp32, fp8 ones dequantized with their 128x128 block scales, and
    whether it has fp8 ones."""
    t = {}
    for f in sorted(os.listdir(d)):
        if f.endswith(".safetensors"):
            t.update(load_file(os.path.join(d, f)))
    out = {}
    for n, v in t.items():
        if n.endswith("_scale_inv"):
            continue
        s = t.get(n + "_scale_inv")
        v = v.float()
        if s is not None:
            s = s.float().repeat_interleave(128, 0).repeat_interleave(128, 1)
            v = v * s[: v.shape[0], : v.shape[1]]
        out[n] = v
    return out, any(n.endswith("_scale_inv") for n in t)


def rel_l2(a, b):
    return ((a - b).norm(dim=-1) / b.norm(dim=-1)).tolist()


calls = {"n": 0}
_linear = F.linear
# sluice-bf16: parameter -> rows above which its product rounds x (None: never); set per model
GEMV_MAX = {"bf16": 6, "fp8": 4}
rounds_above = {}


def linear_bf16_inputs(x, w, b=None):
    calls["n"] += 1
    return _linear(x.to(torch.bfloat16).to(x.dtype), w, b)


def linear_sluice_bf16(x, w, b=None):
    base = w if w._base is None else w._base
    above = rounds_above.get(id(base), GEMV_MAX["bf16"])
    rows = x.numel() // x.shape[-1]
    if above is not None and rows > above:
        calls["n"] += 1
        x = x.to(torch.bfloat16).to(x.dtype)
    return _linear(x, w, b)


def run_with(model, seq, linear):
    """The model's logits with F.linear replaced by `linear`, and how many products it rounded."""
    calls["n"] = 0
    F.linear = linear
    try:
        return model(seq).logits[0].float(), calls["n"]
    finally:
        F.linear = _linear


def main():
    if len(sys.argv) != 3:
        raise SystemExit("usage: bf16_reference.py FIXTURES OUTDIR")
    root, outdir = sys.argv[1], sys.argv[2]
    os.makedirs(outdir, exist_ok=True)
    torch.set_num_threads(8)
    for name in sorted(os.listdir(root)):
        d = os.path.join(root, name)
        if not os.path.exists(os.path.join(d, "logits.f32")):
            continue
        cfg_name = name.rsplit("-", 1)[0]
        ref = json.load(open(os.path.join(d, "reference.json")))
        want = torch.from_numpy(
            __import__("numpy").fromfile(os.path.join(d, "logits.f32"), dtype="<f4")).view(
                ref["logits_rows"], ref["vocab"])
        seq = torch.tensor([(ref["prompt"] + ref["greedy"])[:-1]])
        weights, fp8 = fixture_weights(d)
        model = mr.load_into_transformers(mr.hf_config(mr.CONFIGS[cfg_name]), weights,
                                          os.path.join("/tmp/bf16_reference", name))
        # transformers 5 runs the routed experts through batched/grouped matrix products by
        # default, which F.linear never sees: the per-expert loop (eager) calls F.linear on each
        # expert's token rows, so the rounding below reaches them (the 2026-12-06 run lacked this:
        # it rounded 24 of tiny-a's products, none of them a routed expert's)
        for mod in model.modules():
            cfg = getattr(mod, "config", None)
            if cfg is not None:
                cfg._experts_implementation = "eager"
        with torch.no_grad():
            got = {"fp32": model(seq).logits[0].float()}
            got["bf16-inputs"], n_rounded = run_with(model, seq, linear_bf16_inputs)
            rounds_above.clear()
            for pn, p in model.named_parameters():
                if "kv_b_proj" in pn:
                    rounds_above[id(p)] = None
                elif fp8 and any(k in pn for k in mr.FP8_LINEARS):
                    rounds_above[id(p)] = GEMV_MAX["fp8"]
            got["sluice-bf16"], n_sluice = run_with(model, seq, linear_sluice_bf16)
            # the same rounding with fp64 arithmetic between the roundings: how far fp32's own
            # noise (different sums, as on a GPU) moves the rounded model's logits on this fixture
            f64, _ = run_with(model.double(), seq, linear_sluice_bf16)
            e = torch.tensor(rel_l2(got["sluice-bf16"], f64.float()))
            print(f"{name} sluice-bf16 fp32 vs fp64 between roundings: worst {e.max():.3g} median "
                  f"{e.median():.3g}", flush=True)
            got["bf16"] = model.to(torch.bfloat16)(seq).logits[0].float()
        for way, lg in got.items():
            e = torch.tensor(rel_l2(lg, want))
            print(f"{name} {way:12s} rel L2 vs logits.f32: worst {e.max():.3g} median {e.median():.3g}"
                  f" (rows {len(e)}; linear calls rounded: {n_rounded if way == 'bf16-inputs' else n_sluice if way == 'sluice-bf16' else '-'})",
                  flush=True)
        for way in ("bf16-inputs", "sluice-bf16"):
            got[way].numpy().astype("<f4").tofile(os.path.join(outdir, f"{name}-logits-{way}.f32"))


if __name__ == "__main__":
    main()
