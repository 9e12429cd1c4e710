"""Hardware qualification from the command line: tandem backends, conform, parity and diff, and
the faulty:<backend> rehearsals (each fault kind is caught and its op named)."""
from __future__ import annotations

import os

import json
import re
import subprocess

import pytest


@pytest.fixture(scope="module")
def char_data(tandem, tmp_path_factory, shakespeare_path):
    out = tmp_path_factory.mktemp("qualify") / "shk"
    tandem("prepare", "--input", shakespeare_path, "--tokenizer", "char", "--out", out)
    return out


@pytest.fixture(scope="module")
def bpe_data(tandem, tmp_path_factory, shakespeare_path):
    """The ds-tiny recipe's data (scripts/demo.sh): byte-level BPE with 1024 tokens."""
    out = tmp_path_factory.mktemp("qualify") / "bpe"
    tandem("prepare", "--input", shakespeare_path, "--tokenizer", "bpe:1024", "--out", out)
    return out


# cpu and opencl in one process (parity, diff): libgomp's idle workers spin for a while after each
# parallel region (OMP_WAIT_POLICY=active by default) on the cores PoCL's threads need; passive
# makes a cpu,opencl parity run about 3.5x faster on 2 cores. It is read at process start.
TWO_BACKENDS_ENV = {**os.environ, "OMP_WAIT_POLICY": "passive"}


@pytest.fixture(scope="module")
def has_opencl(tandem) -> bool:
    out = tandem("backends").stdout
    block = out.split("opencl\n", 1)[1] if "opencl\n" in out else ""
    return bool(re.match(r"\s+device 0: (?!.*unusable)", block))


def test_backends_lists_what_the_build_has(tandem):
    out = tandem("backends").stdout
    assert out.startswith("cpu\n")
    assert "opencl" in out and "faulty:<backend>" in out


def test_conform_cpu_passes_and_writes_json(tandem, tmp_path):
    report = tmp_path / "conform.json"
    r = tandem("conform", "--backend", "cpu", "--json", report)
    assert re.search(r"f32\s+\d+ PASS\s+0 FAIL\s+0 UNSUPPORTED", r.stdout), r.stdout[-2000:]
    # bf16: every row passes but those of integer-output ops (expert ids, shifted tokens: f32 rows only).
    assert re.search(r"bf16\s+\d+ PASS\s+0 FAIL\s+\d+ UNSUPPORTED", r.stdout), r.stdout[-2000:]
    rows = json.loads(report.read_text())["rows"]
    assert {"op", "dtype", "case", "node", "metric", "error", "tolerance", "max_rel", "max_rel_tolerance", "class",
            "status"} <= set(rows[0])
    assert {row["status"] for row in rows} == {"PASS", "UNSUPPORTED"}
    # Both metrics judged on every row that ran; the optimizer kernels are rows of their own.
    ran = [row for row in rows if row["status"] == "PASS"]
    assert all(row["error"] <= row["tolerance"] and row["max_rel"] <= row["max_rel_tolerance"] for row in ran)
    assert {"adamw", "sum_squares", "axpy"} <= {row["op"] for row in ran}
    _check_class_summary(r.stdout, ran)
    unsupported = {row["op"] for row in rows if row["status"] == "UNSUPPORTED"}
    assert unsupported == {"topk_route", "shift_tokens", "ep_ids"}, unsupported
    # the bf16 rows cover matmul's K = 1024 f32-accumulation probe and the cast, with a format error
    probe = [row for row in rows if row["dtype"] == "bf16" and row["case"] == "matmul_acc_probe_k1024"]
    assert probe and all(row["status"] == "PASS" for row in probe)
    assert any(row["op"] == "cast" and row["status"] == "PASS" for row in rows)
    assert all("format_error" in row for row in rows)


def _check_class_summary(stdout: str, ran: list[dict]) -> None:
    """The summary names, per class, the worst of each metric over the rows and its bound."""
    summary = stdout.split("worst per class", 1)[1]
    for klass in {row["class"] for row in ran if row["dtype"] == "f32"}:
        m = re.search(rf"^\s+f32\s+{re.escape(klass)}\s+(\d+)\s+(\S+) \((\S+)\)\s+\S+ \S+\s+(\S+) \((\S+)\)",
                      summary, re.M)
        assert m, f"no summary line for {klass}:\n{summary}"
        mine = [row for row in ran if row["class"] == klass and row["dtype"] == "f32"]
        assert int(m.group(1)) == len(mine)
        assert float(m.group(2)) == pytest.approx(max(row["error"] for row in mine), rel=0.06, abs=1e-300)
        assert float(m.group(4)) == pytest.approx(max(row["max_rel"] for row in mine), rel=0.06, abs=1e-300)
        assert float(m.group(2)) <= float(m.group(3)) and float(m.group(4)) <= float(m.group(5))


# Ops whose conformance cases run on every backend; the DeepSeek ops among them must be there too.
DEEPSEEK_OPS = {"rmsnorm", "rmsnorm_grad_x", "rmsnorm_grad_w", "silu", "silu_grad", "slice_last", "pad_last",
                "concat_last", "sigmoid", "sigmoid_grad", "swiglu", "swiglu_grad", "rope", "mla_qkv", "mla_qkv_grad",
                "attention_latent", "topk_route", "route_weights", "route_weights_grad", "moe_dispatch",
                "moe_dispatch_grad", "grouped_matmul", "grouped_matmul_grad_w", "moe_combine", "moe_combine_grad_y",
                "moe_combine_grad_w", "seq_balance_loss", "seq_balance_loss_grad", "shift_tokens"}


def test_conform_opencl_passes(tandem, has_opencl, tmp_path):
    """Every f32 row PASS (the DeepSeek ops included), none UNSUPPORTED, and OpenCL runs every op
    the CPU's rows cover."""
    if not has_opencl:
        pytest.skip("no usable OpenCL device")
    report = tmp_path / "conform.json"
    r = tandem("conform", "--backend", "opencl", "--dtype", "f32", "--json", report)
    assert re.search(r"f32\s+\d+ PASS\s+0 FAIL\s+0 UNSUPPORTED", r.stdout), r.stdout[-2000:]
    rows = json.loads(report.read_text())["rows"]
    assert {row["status"] for row in rows} == {"PASS"}
    passed = {row["op"] for row in rows}
    assert DEEPSEEK_OPS <= passed, f"no conformance rows for {sorted(DEEPSEEK_OPS - passed)}"
    cpu = tmp_path / "cpu.json"
    tandem("conform", "--backend", "cpu", "--dtype", "f32", "--json", cpu)
    assert {row["op"] for row in json.loads(cpu.read_text())["rows"]} == passed


def test_conform_unknown_op_is_an_error(tandem):
    r = tandem.run("conform", "--op", "softmaxx")
    assert r.returncode != 0 and "softmaxx" in r.stderr


@pytest.mark.parametrize("fault,op", [
    ("op=softmax,kind=scale,eps=1e-3", "softmax"),
    ("op=gelu,kind=bitflip,rate=0.001", "gelu"),
    ("op=layernorm,kind=bf16", "layernorm"),
    ("op=softmax,kind=dropgrad", "softmax_grad"),
    # Localised and intermittent faults at small magnitudes: 0.1% of one element or of a 16-element
    # tile, one low mantissa bit (2^-11 relative) stuck in one lane of 32, a fault on every third
    # execution or on half of them.
    ("op=matmul,kind=element,eps=1e-3", "matmul"),
    ("op=layernorm,kind=element,eps=1e-3,index=3", "layernorm"),
    ("op=gelu,kind=tile,eps=1e-3", "gelu"),
    ("op=softmax,kind=stuck,bit=12", "softmax"),
    ("op=matmul,kind=scale,eps=1e-3,every=3", "matmul"),
    ("op=attention,kind=element,eps=1e-3,p=0.5,seed=2", "attention"),
    # The optimizer kernels.
    ("op=adamw,kind=element,eps=1e-3", "adamw"),
    ("op=adamw,kind=stuck,bit=12,every=2", "adamw"),
    ("op=sum_squares,kind=scale,eps=1e-5", "sum_squares"),
    ("op=axpy,kind=tile,eps=1e-3", "axpy"),
])
def test_conform_catches_each_fault_kind(tandem, fault, op):
    r = tandem.run("conform", "--backend", "faulty:cpu", "--fault", fault, "--dtype", "f32")
    assert r.returncode != 0, r.describe()
    failing = re.search(r"failing ops: (.*)", r.stdout).group(1)
    assert re.fullmatch(rf"{op} \(\d+\)", failing), failing
    m = re.search(r"fired on (\d+) of (\d+) executions of (\w+)", r.stdout)
    assert m and int(m.group(1)) > 0 and m.group(3) == fault.split(",")[0][3:], r.stdout[-1500:]


def test_conform_single_element_fails_on_max_rel_alone(tandem, tmp_path):
    """One typical matmul element (index 1000) off by 0.1%: every failing row is over the per-element
    bound, and in the large outputs within the NMSE bound (NMSE alone, the verdict before, passes)."""
    report = tmp_path / "conform.json"
    r = tandem.run("conform", "--backend", "faulty:cpu", "--fault", "op=matmul,kind=element,eps=1e-3,index=1000",
                   "--op", "matmul",
                   "--dtype", "f32", "--json", report)
    assert r.returncode != 0, r.describe()
    failed = [row for row in json.loads(report.read_text())["rows"] if row["status"] == "FAIL"]
    assert failed and all(row["max_rel"] > row["max_rel_tolerance"] for row in failed)
    assert any(row["error"] <= row["tolerance"] for row in failed)


@pytest.mark.parametrize("args,needle", [
    (["--op", "gelu", "--fault", "op=softmax,kind=scale,eps=1e-3"], "op=softmax"),
    (["--op", "gelu", "--fault", "op=adamw,kind=scale,eps=1e-3"], "op=adamw"),
    (["--op", "adamw", "--fault", "op=axpy,kind=scale,eps=1e-3"], "op=axpy"),
])
def test_conform_fault_outside_the_rows_run_is_an_error(tandem, args, needle):
    r = tandem.run("conform", "--backend", "faulty:cpu", "--dtype", "f32", *args)
    assert r.returncode != 0 and needle in r.stderr, r.describe()


# One fault per kind on an op baby-gpt uses; diff must name that op (or its gradient) first.
DIFF_FAULTS = [
    ("op=layernorm,kind=scale,eps=1e-3", "layernorm", r"transformer\.h\.0\.ln_1"),
    ("op=gelu,kind=bitflip,rate=0.001", "gelu", r"transformer\.h\.0\.mlp\.gelu"),
    ("op=attention,kind=bf16", "attention", r"transformer\.h\.0\.attn"),
    ("op=matmul,kind=dropgrad", "matmul", r"\.bwd\."),
    # Localised faults at small magnitudes; NMSE alone (the old verdict) misses the first three.
    ("op=layernorm,kind=element,eps=1e-3", "layernorm", r"transformer\.h\.0\.ln_1"),
    ("op=gelu,kind=tile,eps=1e-3", "gelu", r"transformer\.h\.0\.mlp\.gelu"),
    ("op=attention,kind=stuck,bit=12", "attention", r"transformer\.h\.0\.attn"),
    # Intermittent: every second layernorm execution, so the first divergence is the second layernorm.
    ("op=layernorm,kind=element,eps=1e-3,every=2", "layernorm", r"transformer\.h\.0\.ln_2"),
]


@pytest.mark.parametrize("fault,op,where", DIFF_FAULTS)
def test_diff_names_the_faulty_op(tandem, char_data, fault, op, where):
    r = tandem.run("diff", "--config", "baby-gpt", "--data", char_data, "--backends", "cpu,faulty:cpu",
                   "--fault", fault, "--set", "batch_size=2")
    assert r.returncode != 0, r.describe()
    m = re.search(r"first divergence .*?: (\S+) \((\w+)\)", r.stdout)
    assert m, r.describe()
    assert m.group(2) == op, r.stdout
    assert re.search(where, m.group(1)), r.stdout
    assert "the op itself is wrong" in r.stdout


def test_diff_names_an_intermittent_fault_that_fires_by_chance(tandem, char_data):
    """p=0.5 (seeded): whichever layernorm execution the fault first fires on is the node named,
    and the report says how many of the executions it fired on."""
    r = tandem.run("diff", "--config", "baby-gpt", "--data", char_data, "--backends", "cpu,faulty:cpu",
                   "--fault", "op=layernorm,kind=element,eps=1e-3,p=0.5,seed=4", "--set", "batch_size=2")
    assert r.returncode != 0, r.describe()
    m = re.search(r"first divergence .*?: (\S+) \((\w+)\)", r.stdout)
    assert m and m.group(2) == "layernorm", r.stdout
    fired = re.search(r"fired on (\d+) of (\d+) executions of layernorm", r.stdout)
    assert fired and 0 < int(fired.group(1)) < int(fired.group(2)), r.stdout


@pytest.mark.parametrize("command", ["diff", "parity"])
@pytest.mark.parametrize("fault,needle", [
    ("op=rmsnorm,kind=scale,eps=1e-3", "op=rmsnorm is used by no node"),  # DeepSeek's norm; GPT-2 has none
    ("op=axpy,kind=scale,eps=1e-3", "op=axpy is never run"),              # accumulation only
])
def test_fault_on_an_op_the_run_does_not_use_is_an_error(tandem, char_data, command, fault, needle):
    extra = ["--steps", "1"] if command == "parity" else []
    r = tandem.run(command, "--config", "baby-gpt", "--data", char_data, "--backends", "cpu,faulty:cpu", "--fault", fault,
                   "--set", "batch_size=2", *extra)
    assert r.returncode != 0 and needle in r.stderr, r.describe()


def test_diff_refuses_an_optimizer_fault(tandem, char_data):
    r = tandem.run("diff", "--config", "baby-gpt", "--data", char_data, "--backends", "cpu,faulty:cpu",
                   "--fault", "op=adamw,kind=scale,eps=1e-3", "--set", "batch_size=2")
    assert r.returncode != 0 and "op=adamw is never run by diff" in r.stderr, r.describe()


def test_diff_cpu_against_itself_finds_nothing(tandem, char_data):
    r = tandem("diff", "--config", "baby-gpt", "--data", char_data, "--backends", "cpu,cpu", "--set", "batch_size=2")
    assert "no divergence" in r.stdout


def test_diff_deepseek_names_a_faulty_moe_op(tandem, char_data):
    # ds-tiny carries a buffer (the MoE routing bias) that gets no gradient; diff still runs, and a
    # fault in the experts' grouped matmul is named.
    small = ["--set", "batch_size=2", "--set", "block_size=16", "--set", "hidden_size=32", "--set", "num_hidden_layers=2"]
    r = tandem("diff", "--config", "ds-tiny", "--data", char_data, "--backends", "cpu,cpu", *small)
    assert "no divergence" in r.stdout
    r = tandem.run("diff", "--config", "ds-tiny", "--data", char_data, "--backends", "cpu,faulty:cpu",
                   "--fault", "op=grouped_matmul,kind=scale,eps=1e-3", *small)
    assert r.returncode != 0, r.describe()
    m = re.search(r"first divergence .*?: (\S+) \((\w+)\)", r.stdout)
    assert m and m.group(2) == "grouped_matmul" and "mlp.experts" in m.group(1), r.stdout


@pytest.mark.parametrize("fault", ["op=layernorm,kind=scale,eps=1e-2", "op=gelu,kind=bitflip,rate=0.01",
                                   "op=attention,kind=bf16", "op=matmul,kind=dropgrad",
                                   "op=matmul,kind=tile,eps=1e-2,every=5", "op=gelu,kind=stuck,bit=18",
                                   "op=layernorm,kind=element,eps=0.1,p=0.5",
                                   "op=adamw,kind=element,eps=1e-2", "op=sum_squares,kind=scale,eps=1e-3"])
def test_parity_flags_a_faulty_run(tandem, char_data, fault):
    r = tandem.run("parity", "--config", "baby-gpt", "--data", char_data, "--backends", "cpu,faulty:cpu",
                   "--fault", fault, "--steps", "5", "--set", "batch_size=4")
    assert r.returncode != 0, r.describe()
    assert "verdict: FAIL" in r.stdout


def _parity_line(stdout: str, label: str) -> tuple[float, float, str]:
    m = re.search(rf"^{label}:.*?([0-9.e+-]+|inf|nan) (?:at step \d+ )?\((?:worst: \S+; )?bound ([0-9.e+-]+)\) (ok|OVER)",
                  stdout, re.M)
    assert m, stdout
    return float(m.group(1)), float(m.group(2)), m.group(3)


def test_parity_fails_a_layernorm_off_by_1e_4(tandem, char_data):
    """The issue's case: layernorm outputs x (1 + 1e-4) move the loss by 1.5e-5 only (under the loss
    bound) and all parameters as one vector by 1.5e-6, but the gradient norm by 4e-5 to 7e-5
    relative from step 1 (bound 1e-5; cpu vs opencl: 3.7e-6 over 200 steps): FAIL."""
    r = tandem.run("parity", "--config", "baby-gpt", "--data", char_data, "--backends", "cpu,faulty:cpu",
                   "--fault", "op=layernorm,kind=scale,eps=1e-4", "--steps", "5")
    assert r.returncode != 0, r.describe()
    assert "verdict: FAIL" in r.stdout
    loss, loss_bound, loss_mark = _parity_line(r.stdout, "loss")
    assert loss_mark == "ok" and loss <= loss_bound  # the loss alone would have passed it
    assert re.search(r"^grad norm:.*OVER$", r.stdout, re.M), r.stdout


def test_parity_cpu_opencl(tandem, char_data, has_opencl):
    """The issue's bar: |dloss| <= 1e-4 at every one of 200 steps of baby-gpt, fp32. About 100 s on
    PoCL with 2 busy cores (GEMMs through CLBlast); TANDEM_PARITY_STEPS overrides the count."""
    if not has_opencl:
        pytest.skip("no usable OpenCL device")
    steps = os.environ.get("TANDEM_PARITY_STEPS", "200")
    r = tandem("parity", "--config", "baby-gpt", "--data", char_data, "--backends", "cpu,opencl", "--steps", steps,
               "--tol", "1e-4", timeout=1800, env=TWO_BACKENDS_ENV)
    assert "verdict: PASS" in r.stdout, r.stdout[-3000:]


def test_parity_cpu_opencl_ds_tiny(tandem, bpe_data, has_opencl):
    """DeepSeek-V3 in miniature (MLA, RoPE, routed experts, MTP) trains alike on both: the same
    |dloss| <= 1e-4 bar, 8 steps at batch 4 (the routing must choose the same experts throughout)."""
    if not has_opencl:
        pytest.skip("no usable OpenCL device")
    r = tandem("parity", "--config", "ds-tiny", "--data", bpe_data, "--backends", "cpu,opencl", "--steps", "8",
               "--set", "batch_size=4", "--tol", "1e-4", env=TWO_BACKENDS_ENV)
    assert "verdict: PASS" in r.stdout, r.stdout[-3000:]


def _val_loss(stdout: str) -> float:
    m = re.search(r"^val_loss (\S+)$", stdout, re.M)
    assert m, stdout
    return float(m.group(1))


@pytest.mark.parametrize("config,data", [("baby-gpt", "char_data"), ("ds-tiny", "bpe_data")])
@pytest.mark.parametrize("train_on", ["cpu", "opencl"])
def test_checkpoint_evaluates_alike_on_both_backends(tandem, request, tmp_path, has_opencl, config, data, train_on):
    """A checkpoint trained on one backend evaluates on the other to the same validation loss:
    |dloss| <= 1e-5 (fp32 forward passes of the same weights; observed ~1e-6)."""
    if not has_opencl:
        pytest.skip("no usable OpenCL device")
    data_dir = request.getfixturevalue(data)
    run = tmp_path / "run"
    tandem("train", "--config", config, "--data", data_dir, "--out", run, "--steps", "3", "--set", "batch_size=4",
           "--backend", train_on)
    losses = {b: _val_loss(tandem("eval", "--model", run, "--data", data_dir, "--max-batches", "4", "--backend", b).stdout)
              for b in ("cpu", "opencl")}
    assert abs(losses["cpu"] - losses["opencl"]) <= 1e-5, losses
    # KV-cached decoding (ds-tiny: attention_latent on the latent cache) picks the same greedy tokens
    # (compared as bytes: a barely trained byte-level BPE model emits partial UTF-8 sequences).
    texts = {b: subprocess.run([str(tandem.binary), "generate", "--model", str(run), "--prompt", "ROMEO:", "--max-tokens",
                                "16", "--temperature", "0", "--backend", b], capture_output=True, check=True,
                               timeout=300).stdout for b in ("cpu", "opencl")}
    assert texts["cpu"] == texts["opencl"], texts


def test_diff_cpu_opencl_agree(tandem, char_data, has_opencl):
    if not has_opencl:
        pytest.skip("no usable OpenCL device")
    r = tandem("diff", "--config", "baby-gpt", "--data", char_data, "--backends", "cpu,opencl", "--set", "batch_size=2",
               env=TWO_BACKENDS_ENV)
    assert "no divergence" in r.stdout
