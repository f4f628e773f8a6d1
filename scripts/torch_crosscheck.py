#!/usr/bin/env python3
"""Independent cross-check of qmoe's MoE layer against a PyTorch implementation of the same block.

Reads the folder written by the qmoe-layer GPU test `gpu_dump_for_torch_crosscheck`
(QMOE_LAYER_DUMP=<dir>, or $OUT/layer-dump): our dequantized weights, the input h and our GPU
outputs, as raw little-endian f32/u32 files plus meta.json. Builds transformers'
Qwen3MoeSparseMoeBlock with a matching Qwen3MoeConfig and loads our weights into it (falling back
to a plain-torch block of the same definition when transformers is missing or its API differs),
runs it on RMSNorm(h) in float64, and prints the cosine of our ffn_out (and h + ffn_out) against it.

    python3 scripts/torch_crosscheck.py <dump-dir> [--min-cosine 0.9999]

Exit status 0 when every cosine is >= --min-cosine. No network, no Rust needed.
"""
import argparse
import json
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F


def load(d, name, shape, dtype=np.float32):
    a = np.fromfile(os.path.join(d, name), dtype=np.dtype(dtype).newbyteorder("<"))
    assert a.size == int(np.prod(shape)), f"{name}: {a.size} values, expected {shape}"
    return torch.from_numpy(a.astype(np.float64 if dtype == np.float32 else np.int64).reshape(shape))


def rmsnorm(h, w, eps):
    return h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps) * w


def plain_block(x, router, gate, up, down, k, norm_topk):
    """The Qwen3-MoE sparse block in plain torch: softmax over all experts, top-k, renormalise,
    sum_j w_j * down_e(silu(gate_e x) * up_e x)."""
    logits = x @ router.T
    probs = F.softmax(logits, dim=-1)
    w, ids = torch.topk(probs, k, dim=-1)
    if norm_topk:
        w = w / w.sum(-1, keepdim=True)
    out = torch.zeros_like(x)
    for t in range(x.shape[0]):
        for j in range(k):
            e = int(ids[t, j])
            a = F.silu(gate[e] @ x[t]) * (up[e] @ x[t])
            out[t] += w[t, j] * (down[e] @ a)
    return out, ids


def transformers_block(x, router, gate, up, down, meta):
    """transformers' Qwen3MoeSparseMoeBlock with our weights; handles the per-expert nn.Linear
    layout (experts.N.{gate,up,down}_proj) and the fused layout (experts.gate_up_proj,
    experts.down_proj) of newer versions."""
    from transformers import Qwen3MoeConfig
    from transformers.models.qwen3_moe.modeling_qwen3_moe import Qwen3MoeSparseMoeBlock

    cfg = Qwen3MoeConfig(
        hidden_size=meta["hidden"],
        moe_intermediate_size=meta["intermediate"],
        num_experts=meta["n_experts"],
        num_experts_per_tok=meta["top_k"],
        norm_topk_prob=meta["norm_topk_prob"],
        rms_norm_eps=meta["rms_eps"],
        hidden_act="silu",
    )
    block = Qwen3MoeSparseMoeBlock(cfg).to(torch.float64).eval()
    sd = block.state_dict()
    new = {}
    E, I, H = gate.shape
    for key, val in sd.items():
        if key.endswith("gate.weight") and tuple(val.shape) == (E, H):
            new[key] = router
        elif ".gate_proj.weight" in key:
            new[key] = gate[int(key.split(".")[1])]
        elif ".up_proj.weight" in key:
            new[key] = up[int(key.split(".")[1])]
        elif ".down_proj.weight" in key:
            new[key] = down[int(key.split(".")[1])]
        elif key.endswith("gate_up_proj"):
            if tuple(val.shape) == (E, 2 * I, H):
                new[key] = torch.cat([gate, up], dim=1)
            elif tuple(val.shape) == (E, H, 2 * I):
                new[key] = torch.cat([gate, up], dim=1).transpose(1, 2)
            else:
                raise RuntimeError(f"unknown gate_up_proj shape {tuple(val.shape)}")
        elif key.endswith("down_proj"):
            if tuple(val.shape) == (E, H, I):
                new[key] = down
            elif tuple(val.shape) == (E, I, H):
                new[key] = down.transpose(1, 2)
            else:
                raise RuntimeError(f"unknown down_proj shape {tuple(val.shape)}")
        else:
            raise RuntimeError(f"unexpected parameter {key} {tuple(val.shape)}")
    block.load_state_dict(new, strict=True)
    with torch.no_grad():
        out = block(x.unsqueeze(0))
    if isinstance(out, tuple):
        out = out[0]
    return out.reshape(x.shape)


def cosine(a, b):
    a, b = a.flatten().double(), b.flatten().double()
    return float((a @ b) / (a.norm() * b.norm()))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dump", nargs="?", default=os.environ.get("QMOE_LAYER_DUMP", "layer-dump"))
    ap.add_argument("--min-cosine", type=float, default=0.9999)
    args = ap.parse_args()
    d = args.dump
    meta = json.load(open(os.path.join(d, "meta.json")))
    H, I, E, k, B = meta["hidden"], meta["intermediate"], meta["n_experts"], meta["top_k"], meta["b"]
    norm = load(d, "ffn_norm.f32", (H,))
    router = load(d, "router.f32", (E, H))
    gate = load(d, "gate.f32", (E, I, H))
    up = load(d, "up.f32", (E, I, H))
    down = load(d, "down.f32", (E, H, I))
    h = load(d, "h.f32", (B, H))
    ours_norm = load(d, "gpu_ffn_norm_out.f32", (B, H))
    ours_ffn = load(d, "gpu_ffn_out.f32", (B, H))
    ours_res = load(d, "gpu_residual_out.f32", (B, H))
    ours_ids = load(d, "gpu_topk_ids.u32", (B, k), np.uint32)

    x = rmsnorm(h, norm, meta["rms_eps"])
    ref_plain, ids = plain_block(x, router, gate, up, down, k, meta["norm_topk_prob"])
    try:
        ref, impl = transformers_block(x, router, gate, up, down, meta), "transformers Qwen3MoeSparseMoeBlock"
        try:
            import transformers
            impl += f" (transformers {transformers.__version__})"
        except Exception:
            pass
        c_impls = cosine(ref, ref_plain)
    except Exception as e:  # noqa: BLE001 - any API difference: fall back, say why
        print(f"transformers block unavailable ({type(e).__name__}: {e}); using the plain-torch block")
        ref, impl, c_impls = ref_plain, "plain torch block", 1.0
    same_ids = all(set(ours_ids[t].tolist()) == set(ids[t].tolist()) for t in range(B))
    results = {
        "rmsnorm": cosine(ours_norm, x),
        "ffn_out": cosine(ours_ffn, ref),
        "residual_out": cosine(ours_res, h + ref),
    }
    print(f"device: {meta.get('card', '?')}; shape H {H} I {I} E {E} k {k} B {B}; types {meta.get('qtypes')}")
    print(f"reference: {impl} in float64 on {'cuda' if torch.cuda.is_available() else 'cpu'}, torch {torch.__version__}")
    print(f"transformers block vs plain-torch block cosine: {c_impls:.12f}")
    print(f"top-k expert sets identical: {same_ids}")
    ok = same_ids
    for name, c in results.items():
        print(f"cosine {name:13s} qmoe GPU vs torch: {c:.9f}")
        ok &= c >= args.min_cosine
    print("PASS" if ok else "FAIL", f"(min cosine {args.min_cosine})")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
