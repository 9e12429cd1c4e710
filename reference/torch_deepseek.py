#!/usr/bin/env python3
"""transformers' DeepseekV3ForCausalLM trained with tandem's recipe: the benchmark peer of
bench/bench_deepseek.sh.

The model and the recipe come from a tandem checkpoint directory (what `tandem train` writes):
config.json (transformers' DeepseekV3Config fields) and, unless --random-init, model.safetensors
(loaded with from_pretrained, so both sides train the same weights), and trainer_state.json
(`train_config`: batch_size, block_size, learning-rate schedule, AdamW settings, grad_clip).

Training step = tandem's: mean next-token cross-entropy over all B*T positions (transformers has no
multi-token-prediction training, so compare against tandem runs with num_nextn_predict_layers=0),
global-norm clipping, AdamW (fused; weight decay on >= 2-dim tensors, which are tandem's matrices,
embeddings and expert tensors), nanoGPT's schedule. The routing bias is a buffer and stays put
(run tandem with router_bias_update_rate=0 for the same computation). Batches: random offsets into
the tandem data dir's train.bin (reference/torch_gpt.py's loader).

  python reference/torch_deepseek.py train --checkpoint CKPT --data DATA_DIR [--steps N]
        [--seed S] [--threads 2] [--skip-steps K] [--metrics FILE] [--quiet] [--random-init]

prints one JSON line per step ({"step","loss","lr","grad_norm","tokens_per_s","step_s"}) and a
final {"summary": ...} line (tokens/s over the steps after the first K).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_gpt import Batches, clip_grads, get_lr, make_adamw, read_shard  # noqa: E402


def load(checkpoint: str, random_init: bool):
    from transformers import DeepseekV3Config, DeepseekV3ForCausalLM
    with open(os.path.join(checkpoint, "trainer_state.json")) as f:
        recipe = json.load(f)["train_config"]
    if random_init:
        cfg = DeepseekV3Config.from_pretrained(checkpoint)
        model = DeepseekV3ForCausalLM(cfg)
    else:
        model = DeepseekV3ForCausalLM.from_pretrained(checkpoint, dtype=torch.float32)
    return model.float(), recipe


def train(args) -> dict:
    model, cfg = load(args.checkpoint, args.random_init)
    tokens, vocab = read_shard(os.path.join(args.data, "train.bin"))
    V = model.config.vocab_size
    if int(tokens.max()) >= V:
        raise SystemExit(f"token id {int(tokens.max())} >= vocab_size {V}")
    steps = args.steps if args.steps is not None else cfg["max_steps"]
    B, T, accum = cfg["batch_size"], cfg["block_size"], cfg.get("grad_accum", 1)
    model.train()
    opt = make_adamw(model, cfg)
    batches = Batches(tokens, B, T, args.seed)
    tokens_per_step = B * T * accum
    out = open(args.metrics, "w") if args.metrics else None
    timed_tokens, timed_s, last_loss = 0, 0.0, None
    for it in range(steps):
        t0 = time.perf_counter()
        lr = get_lr(it, cfg)
        for g in opt.param_groups:
            g["lr"] = lr
        loss_sum = 0.0
        for _ in range(accum):
            x, y = batches.next()
            logits = model(input_ids=x, use_cache=False).logits
            loss = F.cross_entropy(logits.reshape(-1, V), y.reshape(-1))
            (loss / accum).backward() if accum > 1 else loss.backward()
            loss_sum += loss.item()
        grad_norm = clip_grads(model, cfg["grad_clip"])
        opt.step()
        opt.zero_grad(set_to_none=True)
        dt = time.perf_counter() - t0
        if it >= args.skip_steps:
            timed_tokens += tokens_per_step
            timed_s += dt
        last_loss = loss_sum / accum
        rec = dict(step=it + 1, loss=last_loss, lr=lr, grad_norm=grad_norm, tokens_per_s=tokens_per_step / dt, step_s=dt)
        if out:
            out.write(json.dumps(rec) + "\n")
        if not args.quiet:
            print(json.dumps(rec), flush=True)
    if out:
        out.close()
    summary = dict(steps=steps, skip_steps=args.skip_steps, final_loss=last_loss,
                   tokens_per_s=timed_tokens / timed_s if timed_s > 0 else None,
                   s_per_step=timed_s / max(1, steps - args.skip_steps) if timed_s else None,
                   n_params=sum(p.numel() for p in model.parameters()),
                   attn_implementation=model.config._attn_implementation,
                   threads=torch.get_num_threads(), torch=torch.__version__,
                   optimizer="fused AdamW" if opt.defaults.get("fused") else "foreach AdamW")
    print(json.dumps(dict(summary=summary)), flush=True)
    return summary


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train", help="train transformers' DeepseekV3ForCausalLM with a tandem run's recipe")
    t.add_argument("--checkpoint", required=True, help="tandem checkpoint dir (config.json, trainer_state.json[, model.safetensors])")
    t.add_argument("--data", required=True, help="tandem data dir (train.bin)")
    t.add_argument("--steps", type=int, help="override max_steps")
    t.add_argument("--seed", type=int, default=1337)
    t.add_argument("--threads", type=int, default=2)
    t.add_argument("--skip-steps", type=int, default=1, help="first steps excluded from the throughput summary")
    t.add_argument("--metrics", help="also write the per-step JSON lines to this file")
    t.add_argument("--quiet", action="store_true", help="print only the summary line")
    t.add_argument("--random-init", action="store_true", help="transformers' init instead of the checkpoint's weights")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    train(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
