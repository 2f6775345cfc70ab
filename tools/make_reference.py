#!/usr/bin/env python3
"""Build tiny random DeepSeek-V3 models with Hugging Face `transformers` and record their logits.

These are sluice's correctness fixtures: the CPU reference engine must reproduce the logits written
here (relative L2 <= 1e-4 per position, fp32) and the greedy continuation id for id.

Run on a machine with torch + transformers (the lent GPU machine has both; the model runs on its
CPU in fp32, so no TF32 or kernel choice can blur the reference):

    python3 tools/make_reference.py OUTDIR

For every config in CONFIGS and every weight format (bf16, fp8) it writes OUTDIR/<name>-<fmt>/:
    config.json                  config A: the official DeepSeek-V3 layout (rope_scaling, type yarn,
                                 quantization_config); config B: what transformers writes itself
    model.safetensors            or model-0000N-of-0000M.safetensors + model.safetensors.index.json
    reference.json               prompt ids, greedy ids, margins (how far from a tie each choice was)
    logits.f32                   float32 LE, (len(prompt)+n_new-1) x vocab: full-sequence prefill of
                                 prompt + greedy[:-1], so row i predicts token i+1

fp8 models are stored exactly as the official release: float8_e4m3fn weights with a float32
`weight_scale_inv` per 128x128 block (ragged edge blocks included), dequantized as q * s. The
reference logits of an fp8 model are computed from those dequantized weights in fp32.
"""
import json
import math
import os
import sys

import torch
from safetensors.torch import save_file
from transformers import DeepseekV3Config, DeepseekV3ForCausalLM

N_NEW = 16
MIN_ROUTER_MARGIN = 3e-4  # gap between the last chosen and first rejected expert / group score (fp32 noise ~1e-6)
MIN_LOGIT_MARGIN = 1e-3   # gap between the greedy token's logit and the runner-up

# Two configs that differ in every dimension. A: hidden 200 (not a multiple of 128, so every fp8
# matrix touching it has a ragged edge block), kv_lora 136. B: q_lora 144, moe width 96.
CONFIGS = {
    "tiny-a": dict(
        vocab_size=512, hidden_size=200, intermediate_size=320, moe_intermediate_size=72,
        num_hidden_layers=3, first_k_dense_replace=1, n_routed_experts=8, n_group=4,
        topk_group=2, num_experts_per_tok=2, n_shared_experts=1, num_attention_heads=4,
        num_key_value_heads=4, q_lora_rank=96, kv_lora_rank=136, qk_nope_head_dim=32,
        qk_rope_head_dim=16, v_head_dim=32, routed_scaling_factor=2.5, rms_norm_eps=1e-6,
        rope_theta=10000.0, yarn=dict(factor=4.0, original_max_position_embeddings=64,
                                      beta_fast=32.0, beta_slow=1.0, mscale=1.0, mscale_all_dim=1.0),
        prompt_len=11, shards=2, official_layout=True, seed=1234),
    "tiny-b": dict(
        vocab_size=700, hidden_size=256, intermediate_size=288, moe_intermediate_size=96,
        num_hidden_layers=4, first_k_dense_replace=2, n_routed_experts=9, n_group=3,
        topk_group=2, num_experts_per_tok=3, n_shared_experts=2, num_attention_heads=2,
        num_key_value_heads=2, q_lora_rank=144, kv_lora_rank=96, qk_nope_head_dim=48,
        qk_rope_head_dim=32, v_head_dim=40, routed_scaling_factor=1.5, rms_norm_eps=1e-5,
        rope_theta=50000.0, yarn=dict(factor=8.0, original_max_position_embeddings=32,
                                      beta_fast=16.0, beta_slow=2.0, mscale=0.707, mscale_all_dim=0.707),
        prompt_len=7, shards=1, official_layout=False, seed=99),
}

FP8_LINEARS = ("q_a_proj", "q_b_proj", "q_proj", "kv_a_proj_with_mqa", "kv_b_proj", "o_proj",
               "gate_proj", "up_proj", "down_proj")


def hf_config(c):
    y = c["yarn"]
    rope = dict(rope_type="yarn", rope_theta=c["rope_theta"], factor=y["factor"],
                original_max_position_embeddings=y["original_max_position_embeddings"],
                beta_fast=y["beta_fast"], beta_slow=y["beta_slow"], mscale=y["mscale"],
                mscale_all_dim=y["mscale_all_dim"])
    keys = {k: v for k, v in c.items()
            if k not in ("yarn", "prompt_len", "shards", "official_layout", "seed", "rope_theta")}
    common = dict(keys, max_position_embeddings=int(y["factor"] * y["original_max_position_embeddings"]),
                  rope_interleave=True, norm_topk_prob=True, tie_word_embeddings=False,
                  attention_bias=False, hidden_act="silu", bos_token_id=0, eos_token_id=1)
    cfg = DeepseekV3Config(**common, rope_parameters=rope)
    if getattr(cfg, "rope_parameters", None) is None:      # transformers 4.x spells it rope_scaling
        legacy = dict(rope, type="yarn")
        del legacy["rope_theta"]
        cfg = DeepseekV3Config(**common, rope_theta=c["rope_theta"], rope_scaling=legacy)
    cfg._attn_implementation = "eager"
    return cfg


def official_config_json(c, quant):
    """config.json as deepseek-ai/DeepSeek-V3 ships it (keys it uses, legacy rope_scaling)."""
    y = c["yarn"]
    d = dict(architectures=["DeepseekV3ForCausalLM"], model_type="deepseek_v3",
             attention_bias=False, attention_dropout=0.0, aux_loss_alpha=0.001,
             bos_token_id=0, eos_token_id=1, ep_size=1, hidden_act="silu",
             initializer_range=0.02, max_position_embeddings=int(y["factor"] * y["original_max_position_embeddings"]),
             moe_layer_freq=1, norm_topk_prob=True, num_nextn_predict_layers=1,
             pretraining_tp=1, rope_theta=c["rope_theta"], scoring_func="sigmoid", seq_aux=True,
             tie_word_embeddings=False, topk_method="noaux_tc", torch_dtype="bfloat16",
             transformers_version="4.33.1", use_cache=True)
    for k in ("vocab_size", "hidden_size", "intermediate_size", "moe_intermediate_size",
              "num_hidden_layers", "first_k_dense_replace", "n_routed_experts", "n_group",
              "topk_group", "num_experts_per_tok", "n_shared_experts", "num_attention_heads",
              "num_key_value_heads", "q_lora_rank", "kv_lora_rank", "qk_nope_head_dim",
              "qk_rope_head_dim", "v_head_dim", "routed_scaling_factor", "rms_norm_eps"):
        d[k] = c[k]
    d["rope_scaling"] = dict(type="yarn", factor=y["factor"], beta_fast=y["beta_fast"],
                             beta_slow=y["beta_slow"], mscale=y["mscale"], mscale_all_dim=y["mscale_all_dim"],
                             original_max_position_embeddings=y["original_max_position_embeddings"])
    if quant == "fp8":
        d["quantization_config"] = dict(activation_scheme="dynamic", fmt="e4m3",
                                        quant_method="fp8", weight_block_size=[128, 128])
    return d


def official_shapes(c):
    """Every tensor of the official checkpoint layout (name -> shape), from the config alone."""
    H, V = c["hidden_size"], c["vocab_size"]
    nh, nope, rope, vd = c["num_attention_heads"], c["qk_nope_head_dim"], c["qk_rope_head_dim"], c["v_head_dim"]
    shapes = {"model.embed_tokens.weight": (V, H), "model.norm.weight": (H,), "lm_head.weight": (V, H)}
    for i in range(c["num_hidden_layers"]):
        p = f"model.layers.{i}."
        shapes[p + "input_layernorm.weight"] = (H,)
        shapes[p + "post_attention_layernorm.weight"] = (H,)
        a = p + "self_attn."
        if c["q_lora_rank"]:
            shapes[a + "q_a_proj.weight"] = (c["q_lora_rank"], H)
            shapes[a + "q_a_layernorm.weight"] = (c["q_lora_rank"],)
            shapes[a + "q_b_proj.weight"] = (nh * (nope + rope), c["q_lora_rank"])
        else:
            shapes[a + "q_proj.weight"] = (nh * (nope + rope), H)
        shapes[a + "kv_a_proj_with_mqa.weight"] = (c["kv_lora_rank"] + rope, H)
        shapes[a + "kv_a_layernorm.weight"] = (c["kv_lora_rank"],)
        shapes[a + "kv_b_proj.weight"] = (nh * (nope + vd), c["kv_lora_rank"])
        shapes[a + "o_proj.weight"] = (H, nh * vd)

        def mlp(prefix, width):
            shapes[prefix + "gate_proj.weight"] = (width, H)
            shapes[prefix + "up_proj.weight"] = (width, H)
            shapes[prefix + "down_proj.weight"] = (H, width)
        if i < c["first_k_dense_replace"]:
            mlp(p + "mlp.", c["intermediate_size"])
        else:
            shapes[p + "mlp.gate.weight"] = (c["n_routed_experts"], H)
            shapes[p + "mlp.gate.e_score_correction_bias"] = (c["n_routed_experts"],)
            for e in range(c["n_routed_experts"]):
                mlp(p + f"mlp.experts.{e}.", c["moe_intermediate_size"])
            mlp(p + "mlp.shared_experts.", c["n_shared_experts"] * c["moe_intermediate_size"])
    return shapes


def random_weights(c, gen):
    """Zero-mean weights scaled so activations stay O(1); router weights large so top-k is decisive."""
    sd = {}
    for name, shape in official_shapes(c).items():
        if name.endswith("e_score_correction_bias"):
            t = torch.rand(shape, generator=gen) * 0.1          # f32 in the official release
        elif "norm" in name:
            t = 1.0 + 0.2 * torch.randn(shape, generator=gen)
        elif name.endswith("embed_tokens.weight"):
            t = torch.randn(shape, generator=gen)
        elif name.endswith("mlp.gate.weight"):                   # router
            t = torch.randn(shape, generator=gen) * (1.5 / math.sqrt(shape[1]))
        else:
            t = torch.randn(shape, generator=gen) / math.sqrt(shape[1])
        if not name.endswith("e_score_correction_bias"):
            t = t.to(torch.bfloat16).float()                     # exactly representable in bf16
        sd[name] = t
    return sd


def load_into_transformers(cfg, weights, tmpdir):
    """Save fp32 weights under the official names and let transformers load them its own way."""
    os.makedirs(tmpdir, exist_ok=True)
    cfg.save_pretrained(tmpdir)
    save_file({k: v.contiguous() for k, v in weights.items()}, os.path.join(tmpdir, "model.safetensors"),
              metadata={"format": "pt"})
    model, info = DeepseekV3ForCausalLM.from_pretrained(
        tmpdir, torch_dtype=torch.float32, attn_implementation="eager", output_loading_info=True)
    bad = {k: v for k, v in info.items() if v and k in ("missing_keys", "unexpected_keys", "mismatched_keys")}
    if bad:
        raise SystemExit(f"transformers did not load the official layout cleanly: {bad}")
    return model.float().eval()


def is_fp8_linear(name):
    parts = name.split(".")
    return len(parts) >= 2 and parts[-1] == "weight" and parts[-2] in FP8_LINEARS


def fp8_quantize(w):
    """Official layout: e4m3 weight, float32 scale per 128x128 block; dequant is q * scale."""
    rows, cols = w.shape
    br, bc = (rows + 127) // 128, (cols + 127) // 128
    scale = torch.empty(br, bc, dtype=torch.float32)
    q = torch.empty(rows, cols, dtype=torch.float8_e4m3fn)
    for i in range(br):
        for j in range(bc):
            blk = w[i * 128:(i + 1) * 128, j * 128:(j + 1) * 128]
            s = blk.abs().max().item() / 448.0
            s = s if s > 0 else 1.0
            scale[i, j] = s
            q[i * 128:(i + 1) * 128, j * 128:(j + 1) * 128] = (blk / s).to(torch.float8_e4m3fn)
    deq = q.float() * scale.repeat_interleave(128, 0)[:rows].repeat_interleave(128, 1)[:, :cols]
    return q, scale, deq


def router_margin(model, c, weights, ids):
    """Smallest gap, over tokens and MoE layers, between chosen and rejected groups and experts."""
    caught = []
    first = c["first_k_dense_replace"]
    hooks = [layer.mlp.register_forward_pre_hook(lambda m, a, i=i: caught.append((i, a[0].detach())))
             for i, layer in enumerate(model.model.layers) if i >= first]
    with torch.no_grad():
        model(ids)
    for h in hooks:
        h.remove()
    if len(caught) != c["num_hidden_layers"] - first:
        raise SystemExit("router hook missed a MoE layer")
    worst = float("inf")
    E, G, TG, K = c["n_routed_experts"], c["n_group"], c["topk_group"], c["num_experts_per_tok"]
    for i, x in caught:
        w = weights[f"model.layers.{i}.mlp.gate.weight"]
        b = weights[f"model.layers.{i}.mlp.gate.e_score_correction_bias"]
        x = x.reshape(-1, x.shape[-1]).float()
        s = torch.sigmoid(x @ w.T) + b
        gs = s.view(-1, G, E // G).topk(min(2, E // G), dim=-1)[0].sum(-1)
        gsorted = gs.sort(dim=-1, descending=True)[0]
        if TG < G:
            worst = min(worst, (gsorted[:, TG - 1] - gsorted[:, TG]).min().item())
        top_groups = gs.topk(TG, dim=-1)[1]
        mask = torch.zeros_like(gs).scatter_(1, top_groups, 1).repeat_interleave(E // G, 1).bool()
        cand = s.masked_fill(~mask, float("-inf")).sort(dim=-1, descending=True)[0]
        worst = min(worst, (cand[:, K - 1] - cand[:, K]).min().item())
    return worst


def greedy(model, prompt, n_new):
    """Greedy continuation by full recompute (no cache involved in the reference)."""
    ids = list(prompt)
    margins = []
    with torch.no_grad():
        for _ in range(n_new):
            logits = model(torch.tensor([ids])).logits[0, -1]
            top2 = logits.topk(2)
            margins.append((top2.values[0] - top2.values[1]).item())
            ids.append(int(top2.indices[0]))
    return ids[len(prompt):], margins


def write_model(outdir, tensors, shards):
    names = sorted(tensors)
    if shards == 1:
        save_file(tensors, os.path.join(outdir, "model.safetensors"), metadata={"format": "pt"})
        return
    per = (len(names) + shards - 1) // shards
    weight_map = {}
    total = 0
    for s in range(shards):
        fname = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
        part = {n: tensors[n] for n in names[s * per:(s + 1) * per]}
        save_file(part, os.path.join(outdir, fname), metadata={"format": "pt"})
        for n, t in part.items():
            weight_map[n] = fname
            total += t.numel() * t.element_size()
    with open(os.path.join(outdir, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)


def build(name, c, root):
    cfg = hf_config(c)
    print(name, "rope:", getattr(cfg, "rope_parameters", None), flush=True)
    for attempt in range(60):
        gen = torch.Generator().manual_seed(c["seed"] + attempt)
        base = random_weights(c, gen)
        prompt = torch.randint(2, c["vocab_size"], (c["prompt_len"],), generator=gen).tolist()
        ok = True
        results = {}
        for fmt in ("bf16", "fp8"):
            store, deq = {}, {}
            for n, t in base.items():
                if fmt == "fp8" and is_fp8_linear(n):
                    q, s, d = fp8_quantize(t)
                    store[n] = q
                    store[n + "_scale_inv"] = s
                    deq[n] = d
                else:
                    store[n] = t if n.endswith("e_score_correction_bias") else t.to(torch.bfloat16)
                    deq[n] = t
            model = load_into_transformers(cfg, deq, os.path.join(root, ".tmp", f"{name}-{fmt}"))
            new_ids, lmarg = greedy(model, prompt, N_NEW)
            seq = prompt + new_ids
            rmarg = router_margin(model, c, deq, torch.tensor([seq]))
            if min(lmarg) < MIN_LOGIT_MARGIN or rmarg < MIN_ROUTER_MARGIN:
                print(f"  {name}-{fmt} attempt {attempt}: margins logit {min(lmarg):.2e} "
                      f"router {rmarg:.2e} too small, new seed", flush=True)
                ok = False
                break
            with torch.no_grad():
                logits = model(torch.tensor([seq[:-1]])).logits[0].float().contiguous()
            results[fmt] = (store, prompt, new_ids, lmarg, rmarg, logits)
        if ok:
            break
    else:
        raise SystemExit(f"{name}: no seed gave decisive margins")

    for fmt, (store, prompt, new_ids, lmarg, rmarg, logits) in results.items():
        outdir = os.path.join(root, f"{name}-{fmt}")
        os.makedirs(outdir, exist_ok=True)
        if c["official_layout"]:
            with open(os.path.join(outdir, "config.json"), "w") as f:
                json.dump(official_config_json(c, fmt), f, indent=2)
        else:
            cfg.save_pretrained(outdir)
            if fmt == "fp8":
                with open(os.path.join(outdir, "config.json")) as f:
                    d = json.load(f)
                d["quantization_config"] = dict(activation_scheme="dynamic", fmt="e4m3",
                                                quant_method="fp8", weight_block_size=[128, 128])
                with open(os.path.join(outdir, "config.json"), "w") as f:
                    json.dump(d, f, indent=2)
        write_model(outdir, store, c["shards"])
        logits.numpy().astype("<f4").tofile(os.path.join(outdir, "logits.f32"))
        ref = dict(prompt=prompt, greedy=new_ids, n_new=N_NEW, logits_rows=logits.shape[0],
                   vocab=logits.shape[1], min_logit_margin=min(lmarg), min_router_margin=rmarg,
                   torch=torch.__version__, transformers=__import__("transformers").__version__,
                   generator="tools/make_reference.py")
        with open(os.path.join(outdir, "reference.json"), "w") as f:
            json.dump(ref, f, indent=2)
        print(f"  wrote {outdir}: greedy {new_ids} margins logit {min(lmarg):.3g} router {rmarg:.3g}",
              flush=True)


def main():
    if len(sys.argv) != 2:
        raise SystemExit("usage: make_reference.py OUTDIR")
    torch.set_num_threads(8)
    for name, c in CONFIGS.items():
        build(name, c, sys.argv[1])


if __name__ == "__main__":
    main()
