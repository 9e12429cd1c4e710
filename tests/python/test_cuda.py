"""The CUDA backend from the command line. Where `tandem backends` lists a usable CUDA device:
conformance (every f32 case PASS), parity with the CPU on baby-gpt (char vocabulary) and ds-tiny
(MLA, DeepSeekMoE, multi-token prediction), greedy decoding identical to the CPU's. Everywhere:
`--backend cuda` without a usable GPU (or in a build without CUDA) is one clean error line, never
a crash. scripts/gpu-check.sh runs the longer version of this on a GPU machine."""
from __future__ import annotations

import json
import os
import re

import pytest


def cuda_block(out: str) -> str:
    """The lines `tandem backends` prints under `cuda` (up to the next backend)."""
    m = re.search(r"^cuda\n((?:  .*\n?)*)", out, re.M)
    return m.group(1) if m else ""


@pytest.fixture(scope="module")
def backends_out(tandem) -> str:
    return tandem("backends").stdout


@pytest.fixture(scope="module")
def has_cuda(backends_out) -> bool:
    return bool(re.search(r"^  device 0: (?!.*unusable)", cuda_block(backends_out), re.M))


@pytest.fixture(scope="module")
def needs_cuda(has_cuda):
    if not has_cuda:
        pytest.skip("no usable CUDA device (see `tandem backends`)")


@pytest.fixture(scope="module")
def char_data(tandem, tmp_path_factory, shakespeare_path):
    out = tmp_path_factory.mktemp("cuda") / "shk"
    tandem("prepare", "--input", shakespeare_path, "--tokenizer", "char", "--out", out)
    return out


def test_backends_lists_cuda_with_devices_or_a_reason(backends_out):
    assert re.search(r"^cuda$", backends_out, re.M), backends_out
    block = cuda_block(backends_out)
    # a device line, or one note saying why there is none (not built, or the CUDA error)
    assert re.search(r"^  device 0: ", block, re.M) or re.fullmatch(r"  \S.*\n?", block), block


def test_train_on_cuda_without_a_gpu_is_one_clean_error(tandem, char_data, tmp_path, has_cuda):
    args = ["train", "--config", "baby-gpt", "--data", char_data, "--out", tmp_path / "run", "--steps", "2",
            "--backend", "cuda", "--set", "batch_size=2"]
    r = tandem.run(*args, timeout=300)
    if has_cuda:
        assert r.returncode == 0, r.describe()
        return
    assert r.returncode == 1, r.describe()  # 1: a tandem::Error; a crash would be a signal or 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.describe()
    assert re.match(r"tandem: error: (cuda backend: .*(CUDA|cuda).*|unknown backend 'cuda' .*)$", lines[0]), lines[0]


def test_conform_cuda_passes_every_f32_case(tandem, needs_cuda, tmp_path):
    report = tmp_path / "conform.json"
    r = tandem("conform", "--backend", "cuda", "--dtype", "f32", "--json", report, timeout=900,
               env={**os.environ, "TANDEM_CUDA_SYNC": "1"})
    assert re.search(r"f32\s+\d+ PASS\s+0 FAIL\s+0 UNSUPPORTED", r.stdout), r.stdout[-3000:]
    assert {row["status"] for row in json.loads(report.read_text())["rows"]} == {"PASS"}


def test_parity_cpu_cuda_baby_gpt(tandem, needs_cuda, char_data):
    r = tandem("parity", "--config", "baby-gpt", "--data", char_data, "--backends", "cpu,cuda", "--steps", "30",
               "--tol", "1e-4", timeout=900)
    assert "verdict: PASS" in r.stdout, r.stdout[-3000:]


def test_parity_cpu_cuda_ds_tiny(tandem, needs_cuda, char_data):
    r = tandem("parity", "--config", "ds-tiny", "--data", char_data, "--backends", "cpu,cuda", "--steps", "10",
               "--set", "batch_size=4", "--set", "block_size=32", timeout=900)
    assert "verdict: PASS" in r.stdout, r.stdout[-3000:]


@pytest.mark.parametrize("config", ["baby-gpt", "ds-tiny"])
def test_greedy_decoding_matches_cpu(tandem, needs_cuda, char_data, tmp_path, config):
    run = tmp_path / "run"
    tandem("train", "--config", config, "--data", char_data, "--out", run, "--steps", "20", "--backend", "cuda",
           "--set", "batch_size=4", "--set", "block_size=32", timeout=900)
    outs = [tandem("generate", "--model", run, "--prompt", "ROMEO:", "--max-tokens", "32", "--temperature", "0",
                   "--backend", be, timeout=600).stdout for be in ("cpu", "cuda")]
    assert outs[0] == outs[1]
