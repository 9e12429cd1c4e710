"""Out-of-tree backends through the plugin ABI (include/tandem/backend_abi.h): loading and refusing
plugins, the loopback plugin (tandem's CPU kernels behind the ABI: conform row for row identical to
cpu, training bit-identical), CPU fallback placement, and examples/backend-plugin built out of tree
against `cmake --install`'s prefix, qualified with conform, parity and diff."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import REPO_ROOT, tandem_path

PLUGIN_DIR = tandem_path().parent / "plugins"
LOOPBACK = PLUGIN_DIR / "libtandem-backend-loopback.so"
# Loopback parity length: 50 steps at batch 2 keep CI fast (the issue asks 200: TANDEM_PLUGIN_PARITY_STEPS=200,
# about 3x longer, bit-identical as well).
PARITY_STEPS = os.environ.get("TANDEM_PLUGIN_PARITY_STEPS", "50")


@pytest.fixture(scope="module")
def loopback() -> Path:
    if not LOOPBACK.is_file():
        pytest.fail(f"{LOOPBACK} missing: build the loopback target (cmake --build build --target loopback)",
                    pytrace=False)
    return LOOPBACK


@pytest.fixture(scope="module")
def char_data(tandem, tmp_path_factory, shakespeare_path):
    out = tmp_path_factory.mktemp("plugin") / "shk"
    tandem("prepare", "--input", shakespeare_path, "--tokenizer", "char", "--out", out)
    return out


def _cc() -> str:
    cc = shutil.which(os.environ.get("CC", "cc"))
    if not cc:
        pytest.fail("no C compiler (cc) to build the test plugins", pytrace=False)
    return cc


@pytest.fixture(scope="module")
def bad_plugins(tmp_path_factory) -> dict[str, Path]:
    """tests/plugins/bad_plugin.c built once per defect (and once correct)."""
    out = tmp_path_factory.mktemp("bad-plugins")
    built = {}
    for mode in ["GOOD", "EMPTY", "BAD_NO_SYMBOL", "BAD_MAJOR", "BAD_REFUSE", "BAD_NULL_ENTRY", "BAD_EXECUTE", "BAD_LIES"]:
        so = out / f"libtandem-backend-{mode.lower()}.so"
        subprocess.run([_cc(), "-std=c11", "-O1", "-w", "-shared", "-fPIC", f"-D{mode}", f"-I{REPO_ROOT / 'include'}",
                        "-o", so, REPO_ROOT / "tests" / "plugins" / "bad_plugin.c", "-lm"], check=True)
        built[mode] = so
    return built


# ---- loading and refusing ----------------------------------------------------------------------

@pytest.mark.parametrize("mode,needle", [
    ("BAD_NO_SYMBOL", "not a tandem backend plugin (it exports no tandem_backend_get_api)"),
    ("BAD_MAJOR", f"built for tandem backend ABI 2.3, this tandem has ABI 1.0 (the major versions must match"),
    ("BAD_REFUSE", "tandem_backend_get_api refused this tandem's backend ABI 1.0"),
    ("BAD_NULL_ENTRY", "required ABI entries are NULL: execute"),
])
def test_a_bad_plugin_is_refused_with_one_clear_line(tandem, bad_plugins, char_data, mode, needle):
    so = bad_plugins[mode]
    r = tandem.run("conform", "--backend", f"plugin:{so}", "--op", "gelu")
    assert r.returncode == 1, r.describe()
    assert r.stderr.count("\n") == 1 and f"plugin {so}: {needle}" in r.stderr, r.describe()


def test_a_missing_plugin_file_is_named(tandem, tmp_path):
    r = tandem.run("conform", "--backend", f"plugin:{tmp_path}/libnothing.so")
    assert r.returncode == 1 and f"plugin {tmp_path}/libnothing.so: no such file" in r.stderr, r.describe()


def test_backend_names_are_looked_up_in_TANDEM_BACKEND_PATH(tandem, loopback, bad_plugins):
    env = {**os.environ, "TANDEM_BACKEND_PATH": f"/nonexistent:{loopback.parent}"}
    r = tandem("conform", "--backend", "loopback", "--op", "gelu", "--dtype", "f32", env=env)
    assert re.search(r"conform loopback \(gelu\):\n\s+f32\s+\d+ PASS\s+0 FAIL\s+0 UNSUPPORTED", r.stdout), r.stdout
    r = tandem.run("conform", "--backend", "acme", env={**os.environ, "TANDEM_BACKEND_PATH": "/nonexistent"})
    assert r.returncode == 1 and "no libtandem-backend-acme.so in TANDEM_BACKEND_PATH=/nonexistent" in r.stderr


def test_backends_lists_plugins_with_abi_devices_and_coverage(tandem, loopback, bad_plugins):
    env = {**os.environ, "TANDEM_BACKEND_PATH": str(loopback.parent)}
    out = tandem("backends", "--plugin", bad_plugins["BAD_MAJOR"], "--plugin", bad_plugins["GOOD"], env=env).stdout
    assert "plugin:<path.so>" in out
    m = re.search(r"^loopback \(plugin (\S+), version 1.0, ABI 1.0; this tandem 1.0\)\n  device 0 of 1: (.*)\n"
                  r"  ops: (\d+) of (\d+) have a kernel", out, re.M)
    assert m and Path(m.group(1)) == loopback and m.group(3) == m.group(4), out
    assert f"{bad_plugins['BAD_MAJOR']}\n  refused: plugin {bad_plugins['BAD_MAJOR']}: built for tandem backend ABI 2.3" in out
    assert re.search(r"^bad \(plugin .*ABI 1.3; this tandem 1.0\)\n.*\n  ops: 1 of \d+ have a kernel: gelu\n"
                     r"  no kernel \(CPU fallback\): ", out, re.M), out


def test_a_failing_execute_names_plugin_node_and_op(tandem, bad_plugins, char_data, tmp_path):
    r = tandem.run("train", "--config", "baby-gpt", "--data", char_data, "--out", tmp_path / "run", "--steps", "1",
                   "--set", "batch_size=2", "--backend", f"plugin:{bad_plugins['BAD_EXECUTE']}")
    assert r.returncode == 1, r.describe()
    assert re.search(r"error: plugin bad: execute of op gelu at node '[^']+' failed: device lost \(injected",
                     r.stderr), r.describe()


def test_conform_catches_a_plugin_whose_supports_lies(tandem, bad_plugins):
    r = tandem.run("conform", "--backend", f"plugin:{bad_plugins['BAD_LIES']}", "--op", "softmax", "--dtype", "f32")
    assert r.returncode == 1 and "conform: 1 op(s) failed on backend bad" in r.stderr, r.describe()
    assert re.search(r"^softmax .* FAIL: ", r.stdout, re.M) and "failing ops: softmax" in r.stdout, r.stdout


def test_fallback_none_refuses_nodes_the_plugin_lacks(tandem, bad_plugins, char_data, tmp_path):
    r = tandem.run("train", "--config", "baby-gpt", "--data", char_data, "--out", tmp_path / "run", "--steps", "1",
                   "--backend", f"plugin:{bad_plugins['GOOD']}", "--fallback", "none")
    assert r.returncode == 1 and re.search(r"backend bad does not support op \w+ \(f32\) at node '", r.stderr), r.describe()


def test_generate_on_an_empty_plugin_is_the_cpus_to_the_bit(tandem, bad_plugins, char_data, tmp_path):
    """Every node on the CPU fallback, decoding included: the KV caches that attention_cached writes
    in place live in plugin memory and are copied back after each fallback run."""
    # One step is enough: the claim is equality to the bit, near-ties in the logits included.
    tandem("train", "--config", "baby-gpt", "--data", char_data, "--out", tmp_path / "run", "--steps", "1",
           "--set", "batch_size=2", "--set", "eval_steps=1")
    out = {}
    for backend in ["cpu", f"plugin:{bad_plugins['EMPTY']}"]:
        out[backend] = tandem("generate", "--model", tmp_path / "run", "--prompt", "ROMEO:", "--max-tokens", "40",
                              "--temperature", "0", "--backend", backend).stdout
    assert len(set(out.values())) == 1, out
    r = tandem("generate", "--model", tmp_path / "run", "--prompt", "ROMEO:", "--max-tokens", "40", "--temperature",
               "0.8", "--seed", "3", "--backend", f"plugin:{bad_plugins['EMPTY']}").stdout
    assert r == tandem("generate", "--model", tmp_path / "run", "--prompt", "ROMEO:", "--max-tokens", "40",
                       "--temperature", "0.8", "--seed", "3", "--backend", "cpu").stdout


# ---- loopback: every op through the ABI ------------------------------------------------------------

def test_loopback_conform_matches_cpu_row_for_row(tandem, loopback, tmp_path):
    """Every row PASS (or UNSUPPORTED where conform itself skips integer-output bf16 rows, as on cpu),
    and each row's error equal to cpu's to the bit: the same kernels, so the ABI lost nothing."""
    rows = {}
    for name, backend in [("cpu", "cpu"), ("loopback", f"plugin:{loopback}")]:
        tandem("conform", "--backend", backend, "--json", tmp_path / f"{name}.json")
        rows[name] = json.loads((tmp_path / f"{name}.json").read_text())["rows"]
    assert len(rows["cpu"]) == len(rows["loopback"])
    for c, p in zip(rows["cpu"], rows["loopback"]):
        assert (p["op"], p["dtype"], p["case"], p["node"]) == (c["op"], c["dtype"], c["case"], c["node"])
        assert p["status"] == c["status"] and p["status"] in ("PASS", "UNSUPPORTED"), p
        assert p["error"] == c["error"] and p["max_rel"] == c["max_rel"], (p, c)
    assert {"adamw", "sum_squares", "axpy"} <= {r["op"] for r in rows["loopback"] if r["status"] == "PASS"}


def test_loopback_trains_bit_identical_to_cpu(tandem, loopback, char_data):
    r = tandem("parity", "--config", "baby-gpt", "--data", char_data, "--backends", f"cpu,plugin:{loopback}",
               "--steps", PARITY_STEPS, "--set", "batch_size=2")
    assert "verdict: PASS" in r.stdout, r.stdout
    assert re.search(r"^loss:\s+max \|dloss\| 0 ", r.stdout, re.M), r.stdout
    assert re.search(r"^grad norm:\s+max \|dn\|/n 0 ", r.stdout, re.M), r.stdout
    assert re.search(r"^parameters:\s+final relative error 0 ", r.stdout, re.M), r.stdout


# ---- the example plugin, built out of tree against the installed prefix ----------------------------

@pytest.fixture(scope="module")
def example_plugin(tmp_path_factory) -> Path:
    """cmake --install build --prefix P, then examples/backend-plugin configured with only P."""
    tmp = tmp_path_factory.mktemp("example-plugin")
    prefix, build = tmp / "prefix", tmp / "build"
    build_dir = tandem_path().parent
    subprocess.run(["cmake", "--install", build_dir, "--prefix", prefix], check=True, capture_output=True)
    assert (prefix / "include" / "tandem" / "backend_abi.h").is_file()
    # A copy of the example outside the repository: nothing can reach src/ by a relative path.
    src = tmp / "example-src"
    shutil.copytree(REPO_ROOT / "examples" / "backend-plugin", src)
    subprocess.run(["cmake", "-S", src, "-B", build, f"-DCMAKE_PREFIX_PATH={prefix}"], check=True, capture_output=True)
    subprocess.run(["cmake", "--build", build], check=True, capture_output=True)
    so = build / "libtandem-backend-example.so"
    assert so.is_file()
    exported = subprocess.run(["nm", "-D", "--defined-only", so], check=True, capture_output=True, text=True).stdout
    assert [l.split()[-1] for l in exported.splitlines() if l.strip()] == ["tandem_backend_get_api"], exported
    return so


def test_example_plugin_conform_pass_and_fallback(tandem, example_plugin, tmp_path):
    r = tandem("conform", "--backend", f"plugin:{example_plugin}", "--json", tmp_path / "c.json")
    rows = json.loads((tmp_path / "c.json").read_text())["rows"]
    mine = {"matmul", "add", "sum_to", "gelu", "gelu_grad"}
    for row in rows:
        if row["op"] in mine and row["dtype"] == "f32":
            assert row["status"] == "PASS", row
        elif row["status"] != "UNSUPPORTED":  # conform's own integer-output bf16 skips stay UNSUPPORTED
            assert row["status"] == "FALLBACK", row
    assert {row["op"] for row in rows if row["status"] == "PASS"} == mine
    assert re.search(r"f32\s+\d+ PASS\s+0 FAIL\s+0 UNSUPPORTED\s+\d+ FALLBACK", r.stdout), r.stdout[-1500:]


def test_example_plugin_trains_with_fallback_and_passes_parity(tandem, example_plugin, char_data, tmp_path):
    r = tandem("train", "--config", "baby-gpt", "--data", char_data, "--out", tmp_path / "run", "--steps", "2",
               "--set", "batch_size=2", "--set", "eval_steps=1", "--backend", f"plugin:{example_plugin}")
    m = re.search(r"^placement: (\d+) of (\d+) nodes on example, (\d+) on cpu \(fallback\), (\d+) copies per step$",
                  r.stderr, re.M)
    assert m and 0 < int(m.group(1)) < int(m.group(2)) and int(m.group(4)) > 0, r.stderr
    assert re.search(r"^fallback copies: \d+ per step, ", r.stderr, re.M), r.stderr
    r = tandem("parity", "--config", "baby-gpt", "--data", char_data, "--backends", f"cpu,plugin:{example_plugin}",
               "--steps", "10", "--set", "batch_size=2")
    assert "verdict: PASS" in r.stdout, r.stdout


def test_diff_names_the_example_plugins_broken_gelu(tandem, example_plugin, char_data):
    env = {**os.environ, "TANDEM_EXAMPLE_BUG": "gelu"}
    r = tandem.run("diff", "--config", "baby-gpt", "--data", char_data, "--backends", f"cpu,plugin:{example_plugin}",
                   "--set", "batch_size=2", env=env)
    assert r.returncode != 0, r.describe()
    m = re.search(r"first divergence .*?: (\S+) \((\w+)\)", r.stdout)
    assert m and m.group(2) == "gelu", r.stdout
    assert "its inputs agree: the op itself is wrong" in r.stdout
    # Without the switch the same plugin agrees everywhere within the bounds.
    r = tandem("diff", "--config", "baby-gpt", "--data", char_data, "--backends", f"cpu,plugin:{example_plugin}",
               "--set", "batch_size=2")
    assert "no divergence" in r.stdout, r.stdout
