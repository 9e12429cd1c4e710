"""PyTorch's per-expert loop over a DeepSeekMoE layer's GEMMs (the way transformers' DeepseekV3MoE
runs its experts: one matmul per expert on its tokens), on the shapes and loads of
bench/bench_moe.cpp; prints one line per GEMM: `torch <model> <load> <gemm> <GFLOP/s>`.

    python bench/torch_moe.py [--threads T] [--seconds S]
"""
import argparse
import math
import time

import torch

MODELS = [("ds-tiny", 12 * 64, 128, 96, 8, 2), ("ds-small", 8 * 256, 512, 256, 32, 4)]


def loads(tokens, experts, top_k, kind):
    """Rows per expert, as bench_moe.cpp's loads()."""
    rows = tokens * top_k
    w = [0.0] * experts
    n = [0] * experts
    if kind == "hot":
        n[0] = tokens
        for e in range(1, experts // 2 + 1):
            w[e] = 1.0
    else:
        w = [1.0 / (e + 1) if kind == "zipf" else 1.0 for e in range(experts)]
    total = sum(w)
    left = rows - n[0]
    share = left
    for e in range(experts):
        c = min(tokens - n[e], math.floor(share * w[e] / total))
        n[e] += c
        left -= c
    e = 0
    while left > 0:
        if w[e] > 0 and n[e] < tokens:
            n[e] += 1
            left -= 1
        e = (e + 1) % experts
    return n


def median(v):
    v = sorted(v)
    k = len(v)
    return v[k // 2] if k % 2 else 0.5 * (v[k // 2 - 1] + v[k // 2])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=0.3)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}")
    for name, tokens, hidden, inter, experts, top_k in MODELS:
        gemms = [("fwd gateup", 0, 2 * inter, hidden), ("fwd down", 0, hidden, inter), ("dx gateup", 1, 2 * inter, hidden),
                 ("dx down", 1, hidden, inter), ("dw gateup", 2, 2 * inter, hidden), ("dw down", 2, hidden, inter)]
        for load in ("uniform", "zipf", "hot"):
            n = loads(tokens, experts, top_k, load)
            off = [0]
            for c in n:
                off.append(off[-1] + c)
            rows = off[-1]
            for what, form, O, I in gemms:
                W = torch.randn(experts, O, I)
                X = torch.randn(rows, I)
                G = torch.randn(rows, O)
                Y = torch.empty(rows, max(O, I))
                DW = torch.empty(experts, O, I)

                def run():
                    for e in range(experts):
                        a, b = off[e], off[e + 1]
                        if form == 0:
                            torch.matmul(X[a:b], W[e].t(), out=Y[a:b, :O])
                        elif form == 1:
                            torch.matmul(G[a:b], W[e], out=Y[a:b, :I])
                        else:
                            torch.matmul(G[a:b].t(), X[a:b], out=DW[e])

                t0 = time.perf_counter()
                run(), run()
                per = (time.perf_counter() - t0) / 2
                reps = max(5, min(500, int(args.seconds / max(per, 1e-9))))
                ts = []
                for _ in range(reps):
                    t0 = time.perf_counter()
                    run()
                    ts.append(time.perf_counter() - t0)
                flop = 2.0 * rows * O * I
                print(f"torch {name} {load} {what} {flop / median(ts) * 1e-9:.2f}", flush=True)


if __name__ == "__main__":
    main()
