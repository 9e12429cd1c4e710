"""Writes vectors.json: f32 rows and their q8_0 bytes as ggml's reference quantizer makes them
(gguf-py's numpy port, gguf.quants.quantize, of quantize_row_q8_0_ref), for tests/cpp/test_bf16.cpp.

    .venv/bin/python tests/data/q8_0/make_vectors.py   # gguf==0.19.0 (requirements-dev.txt)
"""
import json
from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType, quants

rng = np.random.default_rng(7)
rows = [
    rng.normal(0, 1, 96),                      # three blocks of N(0, 1)
    rng.normal(0, 1e-3, 64) ,                  # small magnitudes
    rng.normal(0, 300, 64),                    # large magnitudes (fp16 scale ~ 7)
    np.zeros(32),                              # an all-zero block: d = 0, q = 0
    np.concatenate([[127.0, -63.5, 63.5, 0.5, -0.5, 1.5, -1.5, 2.5], rng.normal(0, 30, 24)]),  # ties at amax = 127
    np.concatenate([[-8.0], rng.uniform(-8, 8, 31)]),  # amax from a negative value
    rng.standard_t(2, 64) * 10,                # heavy tails: one large value per block
]
out = []
for r in rows:
    x = np.asarray(r, dtype=np.float32)
    q = quants.quantize(x.reshape(1, -1), GGMLQuantizationType.Q8_0)
    out.append({"values": [float(v) for v in x], "q8_0": q.tobytes().hex()})
Path(__file__).with_name("vectors.json").write_text(json.dumps(out, indent=1) + "\n")
print(f"wrote {len(out)} rows")
