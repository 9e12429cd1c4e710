#!/usr/bin/env python3
"""A small, readable PyTorch GPT-2: tandem's reference model and benchmark peer.

Architecture (identical to HF GPT2LMHeadModel, so state dicts are interchangeable):
pre-LayerNorm blocks, learned absolute positions, biases everywhere, GELU (tanh approximation),
LayerNorm eps 1e-5, causal attention via F.scaled_dot_product_attention(is_causal=True),
lm_head tied to the token embedding. Linear weights use HF's Conv1D layout [in, out]: y = x @ W + b.

Parameter names are HF's: transformer.wte.weight, transformer.wpe.weight,
transformer.h.{i}.ln_1.{weight,bias}, transformer.h.{i}.attn.c_attn.{weight,bias},
transformer.h.{i}.attn.c_proj.{weight,bias}, transformer.h.{i}.ln_2.{weight,bias},
transformer.h.{i}.mlp.c_fc.{weight,bias}, transformer.h.{i}.mlp.c_proj.{weight,bias},
transformer.ln_f.{weight,bias}.

Training recipe = tandem's: nanoGPT LR schedule (linear warmup + cosine to min_lr), AdamW with
decoupled weight decay on tensors with >= 2 dims only (PyTorch AdamW semantics, fused when
available), global-norm gradient clipping, mean cross-entropy over all B*T positions.

Command line:
  python reference/torch_gpt.py train --config baby-gpt --data DATA_DIR [--steps N]
        [--set key=value ...] [--seed S] [--threads 2] [--skip-steps K] [--metrics FILE]
prints one JSON line per step ({"step","loss","lr","grad_norm","tokens_per_s"[,"val_loss"]})
and a final {"summary": ...} line with tokens/s (excluding the first K steps) and val loss.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

# --------------------------------------------------------------------------------------------
# Configuration (flat keys, same names and presets as tandem's)

MODEL_KEYS = ("vocab_size", "n_positions", "n_embd", "n_layer", "n_head", "layer_norm_epsilon")
TRAIN_KEYS = ("batch_size", "block_size", "max_steps", "learning_rate", "min_lr", "warmup_steps",
              "lr_decay_steps", "weight_decay", "beta1", "beta2", "adam_eps", "grad_clip",
              "grad_accum", "eval_interval", "eval_steps", "precision")
ALL_KEYS = MODEL_KEYS + TRAIN_KEYS

DEFAULTS = dict(layer_norm_epsilon=1e-5, adam_eps=1e-8, grad_clip=1.0, grad_accum=1,
                weight_decay=0.1, beta1=0.9, beta2=0.99, learning_rate=1e-3)

PRESETS = {
    # nanoGPT's CPU Shakespeare recipe.
    "baby-gpt": dict(n_layer=4, n_head=4, n_embd=128, n_positions=64, block_size=64,
                     batch_size=12, learning_rate=1e-3, min_lr=1e-4, warmup_steps=100,
                     lr_decay_steps=2000, max_steps=2000, weight_decay=0.1, beta1=0.9,
                     beta2=0.99, grad_clip=1.0, eval_interval=250, eval_steps=20),
    "gpt2-124m": dict(n_layer=12, n_head=12, n_embd=768, n_positions=1024, block_size=1024,
                      vocab_size=50257, batch_size=4, learning_rate=6e-4, min_lr=6e-5,
                      warmup_steps=700, lr_decay_steps=600000, max_steps=600000,
                      weight_decay=0.1, beta1=0.9, beta2=0.95, grad_clip=1.0,
                      eval_interval=2000, eval_steps=200),
}

INT_KEYS = {"vocab_size", "n_positions", "n_embd", "n_layer", "n_head", "batch_size",
            "block_size", "max_steps", "warmup_steps", "lr_decay_steps", "grad_accum",
            "eval_interval", "eval_steps"}


def load_config(name_or_file: str, overrides: list[str] | None = None) -> dict:
    """Preset name or flat JSON file, then `key=value` overrides. Unknown keys are errors."""
    if name_or_file in PRESETS:
        cfg = dict(PRESETS[name_or_file])
    else:
        with open(name_or_file) as f:
            cfg = json.load(f)
    for kv in overrides or []:
        key, sep, val = kv.partition("=")
        if not sep:
            raise SystemExit(f"--set expects key=value, got {kv!r}")
        try:
            cfg[key] = json.loads(val)
        except ValueError:
            cfg[key] = val  # a bare string, e.g. precision=bf16
    unknown = sorted(set(cfg) - set(ALL_KEYS))
    if unknown:
        raise SystemExit(f"unknown config key(s): {', '.join(unknown)}")
    for k, v in DEFAULTS.items():
        cfg.setdefault(k, v)
    for k in INT_KEYS & set(cfg):
        cfg[k] = int(cfg[k])
    return cfg


@dataclass
class GPTConfig:
    vocab_size: int
    n_positions: int
    n_embd: int
    n_layer: int
    n_head: int
    layer_norm_epsilon: float = 1e-5

    @classmethod
    def from_dict(cls, d: dict) -> "GPTConfig":
        return cls(**{k: d[k] for k in MODEL_KEYS if k in d})


# --------------------------------------------------------------------------------------------
# Model

class Conv1D(nn.Module):
    """HF's Conv1D: weight [in, out], y = x @ W + b."""

    def __init__(self, n_in: int, n_out: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n_in, n_out))
        self.bias = nn.Parameter(torch.zeros(n_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape[:-1] + (self.weight.shape[1],)
        return torch.addmm(self.bias, x.reshape(-1, x.shape[-1]), self.weight).view(shape)


class Attention(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        assert cfg.n_embd % cfg.n_head == 0
        self.n_head = cfg.n_head
        self.c_attn = Conv1D(cfg.n_embd, 3 * cfg.n_embd)
        self.c_proj = Conv1D(cfg.n_embd, cfg.n_embd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)
        hs = C // self.n_head
        q = q.view(B, T, self.n_head, hs).transpose(1, 2)
        k = k.view(B, T, self.n_head, hs).transpose(1, 2)
        v = v.view(B, T, self.n_head, hs).transpose(1, 2)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.c_proj(y.transpose(1, 2).reshape(B, T, C))


class MLP(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.c_fc = Conv1D(cfg.n_embd, 4 * cfg.n_embd)
        self.c_proj = Conv1D(4 * cfg.n_embd, cfg.n_embd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(F.gelu(self.c_fc(x), approximate="tanh"))


class Block(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.n_embd, eps=cfg.layer_norm_epsilon)
        self.attn = Attention(cfg)
        self.ln_2 = nn.LayerNorm(cfg.n_embd, eps=cfg.layer_norm_epsilon)
        self.mlp = MLP(cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.config = cfg
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(cfg.vocab_size, cfg.n_embd),
            wpe=nn.Embedding(cfg.n_positions, cfg.n_embd),
            h=nn.ModuleList([Block(cfg) for _ in range(cfg.n_layer)]),
            ln_f=nn.LayerNorm(cfg.n_embd, eps=cfg.layer_norm_epsilon),
        ))
        self.init_weights()

    def init_weights(self, std: float = 0.02) -> None:
        """GPT-2 init: N(0, std) weights, residual projections scaled by 1/sqrt(2 n_layer),
        zero biases, LayerNorm (1, 0)."""
        for name, p in self.named_parameters():
            if name.endswith(("ln_1.weight", "ln_2.weight", "ln_f.weight")):
                nn.init.ones_(p)
            elif name.endswith("bias"):
                nn.init.zeros_(p)
            elif name.endswith("c_proj.weight"):
                nn.init.normal_(p, 0.0, std / math.sqrt(2 * self.config.n_layer))
            else:
                nn.init.normal_(p, 0.0, std)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None):
        """idx [B, T] int64 -> logits [B, T, V] (and the mean cross-entropy if targets given;
        targets are the already shifted next tokens)."""
        B, T = idx.shape
        if T > self.config.n_positions:
            raise ValueError(f"sequence length {T} > n_positions {self.config.n_positions}")
        tr = self.transformer
        pos = torch.arange(T, device=idx.device)
        x = tr.wte(idx) + tr.wpe(pos)
        for block in tr.h:
            x = block(x)
        x = tr.ln_f(x)
        logits = x @ tr.wte.weight.t()
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1))
        return logits, loss

    def num_params(self, non_embedding: bool = False) -> int:
        n = sum(p.numel() for p in self.parameters())
        if non_embedding:
            n -= self.transformer.wte.weight.numel() + self.transformer.wpe.weight.numel()
        return n

    # -- HF interop ------------------------------------------------------------------------

    def load_hf_state_dict(self, sd: dict) -> None:
        """Load an HF GPT2LMHeadModel / model.safetensors state dict (lm_head and non-parameter
        buffers such as attn.bias / attn.masked_bias are ignored; missing params are errors)."""
        own = dict(self.named_parameters())
        sd = {k: v for k, v in sd.items() if k in own}
        missing = sorted(set(own) - set(sd))
        if missing:
            raise KeyError(f"missing parameters: {missing}")
        with torch.no_grad():
            for k, v in sd.items():
                if own[k].shape != v.shape:
                    raise ValueError(f"{k}: shape {tuple(v.shape)} != {tuple(own[k].shape)}")
                own[k].copy_(v.to(own[k].dtype))

    @classmethod
    def from_pretrained_dir(cls, path: str) -> "GPT":
        """Load an HF-style dir (config.json + model.safetensors)."""
        from safetensors.torch import load_file
        with open(os.path.join(path, "config.json")) as f:
            hf = json.load(f)
        cfg = GPTConfig(vocab_size=hf["vocab_size"], n_positions=hf["n_positions"],
                        n_embd=hf["n_embd"], n_layer=hf["n_layer"], n_head=hf["n_head"],
                        layer_norm_epsilon=hf.get("layer_norm_epsilon", 1e-5))
        model = cls(cfg)
        model.load_hf_state_dict(load_file(os.path.join(path, "model.safetensors")))
        return model


# --------------------------------------------------------------------------------------------
# Optimizer and schedule (tandem's recipe)

def make_adamw(model: nn.Module, cfg: dict, lr: float | None = None) -> torch.optim.AdamW:
    """AdamW with weight decay on >= 2-dim tensors only (matrices, embeddings)."""
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    groups = [dict(params=decay, weight_decay=cfg["weight_decay"]),
              dict(params=no_decay, weight_decay=0.0)]
    kw = dict(lr=cfg["learning_rate"] if lr is None else lr, betas=(cfg["beta1"], cfg["beta2"]),
              eps=cfg["adam_eps"])
    try:
        return torch.optim.AdamW(groups, fused=True, **kw)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.AdamW(groups, foreach=True, **kw)


def get_lr(it: int, cfg: dict) -> float:
    """nanoGPT's get_lr (it = 0-based step)."""
    lr, min_lr = cfg["learning_rate"], cfg["min_lr"]
    warmup, decay = cfg["warmup_steps"], cfg["lr_decay_steps"]
    if it < warmup:
        return lr * (it + 1) / (warmup + 1)
    if it > decay:
        return min_lr
    ratio = (it - warmup) / (decay - warmup)
    coeff = 0.5 * (1.0 + math.cos(math.pi * ratio))
    return min_lr + coeff * (lr - min_lr)


def clip_grads(model: nn.Module, max_norm: float) -> float:
    """Global L2 norm clipping (torch.nn.utils.clip_grad_norm_ semantics); returns the norm."""
    params = [p for p in model.parameters() if p.grad is not None]
    if max_norm > 0:
        return float(torch.nn.utils.clip_grad_norm_(params, max_norm, foreach=True))
    return float(torch.linalg.vector_norm(
        torch.stack([torch.linalg.vector_norm(p.grad) for p in params])))


# --------------------------------------------------------------------------------------------
# Data: tandem token shards (docs/formats.md)

SHARD_MAGIC = b"TANDEMTK"
HEADER_BYTES = 64
DTYPES = {1: np.uint16, 2: np.uint32}


def read_shard(path: str) -> tuple[np.ndarray, int]:
    """Returns (tokens as a read-only memmap, vocab size). Validates magic, version, dtype and
    that the file size matches the token count (the XXH64 checksum is not verified here)."""
    with open(path, "rb") as f:
        head = f.read(HEADER_BYTES)
    if len(head) < HEADER_BYTES or head[:8] != SHARD_MAGIC:
        raise ValueError(f"{path}: not a tandem token shard (bad magic)")
    version, dtype_code = np.frombuffer(head, "<u4", 2, 8)
    count = int(np.frombuffer(head, "<u8", 1, 16)[0])
    vocab = int(np.frombuffer(head, "<u4", 1, 32)[0])
    if version != 1:
        raise ValueError(f"{path}: unsupported shard version {version}")
    if int(dtype_code) not in DTYPES:
        raise ValueError(f"{path}: unknown token dtype code {dtype_code}")
    dtype = np.dtype(DTYPES[int(dtype_code)]).newbyteorder("<")
    size = os.path.getsize(path)
    if size != HEADER_BYTES + count * dtype.itemsize:
        raise ValueError(f"{path}: size {size} does not match token count {count}")
    return np.memmap(path, dtype=dtype, mode="r", offset=HEADER_BYTES, shape=(count,)), vocab


class Batches:
    """Random-offset batches like nanoGPT's get_batch: x = data[i:i+T], y = data[i+1:i+1+T]."""

    def __init__(self, tokens: np.ndarray, batch_size: int, block_size: int, seed: int):
        if len(tokens) <= block_size + 1:
            raise ValueError(f"shard has {len(tokens)} tokens, needs more than {block_size + 1}")
        self.data = np.asarray(tokens, dtype=np.int64)  # small shards: load once
        self.B, self.T = batch_size, block_size
        self.rng = np.random.default_rng(seed)
        self.arange = np.arange(block_size + 1)

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        ix = self.rng.integers(0, len(self.data) - self.T, size=self.B)
        chunk = torch.from_numpy(self.data[ix[:, None] + self.arange])
        return chunk[:, :-1], chunk[:, 1:]


# --------------------------------------------------------------------------------------------
# Training entry point (benchmark peer)

def train(cfg: dict, data_dir: str, seed: int, skip_steps: int, metrics_path: str | None,
          quiet: bool = False, compile_model: bool = False) -> dict:
    train_tokens, vocab = read_shard(os.path.join(data_dir, "train.bin"))
    val_tokens, _ = read_shard(os.path.join(data_dir, "val.bin"))
    cfg.setdefault("vocab_size", vocab)
    if int(train_tokens.max()) >= cfg["vocab_size"]:
        raise SystemExit(f"token id {int(train_tokens.max())} >= vocab_size {cfg['vocab_size']}")
    for k in ("n_positions", "block_size", "batch_size", "max_steps"):
        if k not in cfg:
            raise SystemExit(f"config lacks {k}")
    if cfg["block_size"] > cfg["n_positions"]:
        raise SystemExit("block_size > n_positions")
    cfg.setdefault("warmup_steps", 0)
    cfg.setdefault("lr_decay_steps", cfg["max_steps"])
    cfg.setdefault("min_lr", cfg["learning_rate"] / 10)
    cfg.setdefault("eval_interval", 0)
    cfg.setdefault("eval_steps", 0)

    torch.manual_seed(seed)
    model = GPT(GPTConfig.from_dict(cfg))
    model.train()
    opt = make_adamw(model, cfg)
    # torch.compile works offline here (inductor + gcc) but measured within noise of eager on
    # baby-gpt with 2 threads, after ~55 s of compilation, so eager is the default (as nanoGPT's
    # CPU recipe, compile=False).
    fwd = torch.compile(model) if compile_model else model
    # precision=bf16: PyTorch's own mixed precision on the CPU (bf16 matmuls, f32 master weights,
    # optimizer and loss), the peer of tandem's --precision bf16.
    if cfg.get("precision", "f32") not in ("f32", "bf16"):
        raise SystemExit(f"precision {cfg['precision']!r} is not f32 or bf16")
    bf16 = cfg.get("precision") == "bf16"
    B, T, accum = cfg["batch_size"], cfg["block_size"], cfg["grad_accum"]
    tr_batches = Batches(train_tokens, B, T, seed)
    val_batches = Batches(val_tokens, B, T, seed + 1)
    tokens_per_step = B * T * accum
    out = open(metrics_path, "w") if metrics_path else None

    @torch.no_grad()
    def eval_loss() -> float:
        model.eval()
        losses = [model(*val_batches.next())[1].item() for _ in range(cfg["eval_steps"])]
        model.train()
        return sum(losses) / len(losses)

    timed_tokens, timed_s, val_loss, last_loss = 0, 0.0, None, None
    for it in range(cfg["max_steps"]):
        t0 = time.perf_counter()
        lr = get_lr(it, cfg)
        for g in opt.param_groups:
            g["lr"] = lr
        loss_sum = 0.0
        for _ in range(accum):
            x, y = tr_batches.next()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                _, loss = fwd(x, y)
            (loss / accum).backward() if accum > 1 else loss.backward()
            loss_sum += loss.item()
        grad_norm = clip_grads(model, cfg["grad_clip"])
        opt.step()
        opt.zero_grad(set_to_none=True)
        dt = time.perf_counter() - t0
        step = it + 1
        if it >= skip_steps:
            timed_tokens += tokens_per_step
            timed_s += dt
        last_loss = loss_sum / accum
        rec = dict(step=step, loss=last_loss, lr=lr, grad_norm=grad_norm,
                   tokens_per_s=tokens_per_step / dt, step_s=dt)
        if cfg["eval_steps"] > 0 and ((cfg["eval_interval"] > 0 and step % cfg["eval_interval"] == 0)
                                      or step == cfg["max_steps"]):
            val_loss = rec["val_loss"] = eval_loss()
        line = json.dumps(rec)
        if out:
            out.write(line + "\n")
        if not quiet:
            print(line, flush=False)
    if out:
        out.close()
    summary = dict(steps=cfg["max_steps"], skip_steps=skip_steps, final_loss=last_loss,
                   val_loss=val_loss,
                   tokens_per_s=timed_tokens / timed_s if timed_s > 0 else None,
                   s_per_step=timed_s / max(1, cfg["max_steps"] - skip_steps) if timed_s else None,
                   n_params=model.num_params(),
                   n_params_nonembedding=model.num_params(non_embedding=True),
                   threads=torch.get_num_threads(), torch=torch.__version__, compiled=compile_model,
                   precision=cfg.get("precision", "f32"),
                   optimizer="fused AdamW" if opt.defaults.get("fused") else "foreach AdamW")
    print(json.dumps(dict(summary=summary)), flush=True)
    return summary


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train", help="train on a tandem data dir with tandem's recipe")
    t.add_argument("--config", required=True, help="preset name (baby-gpt, gpt2-124m) or JSON file")
    t.add_argument("--data", required=True, help="tandem data dir (train.bin, val.bin)")
    t.add_argument("--steps", type=int, help="override max_steps")
    t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    t.add_argument("--seed", type=int, default=1337)
    t.add_argument("--threads", type=int, default=2)
    t.add_argument("--skip-steps", type=int, default=2,
                   help="first steps excluded from the throughput summary (warmup)")
    t.add_argument("--metrics", help="also write the per-step JSON lines to this file")
    t.add_argument("--quiet", action="store_true", help="print only the summary line")
    t.add_argument("--compile", action="store_true", help="torch.compile the model (off by default)")
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    cfg = load_config(args.config, args.set)
    if args.steps is not None:
        cfg["max_steps"] = args.steps
    train(cfg, args.data, args.seed, args.skip_steps, args.metrics, args.quiet, args.compile)
    return 0


if __name__ == "__main__":
    sys.exit(main())
