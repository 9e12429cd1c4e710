"""`tandem report` and `tandem conform --html`, opened in headless Chromium (Debian's, through
Playwright, as test_serve.py drives the chat page):

- a ds-tiny run with real guard events (NaN losses injected: skips, then a rollback) and a resume;
  malformed lines appended to its metrics.jsonl are skipped and counted, never a crash; every
  expected chart has data points, the loss chart marks the skips, the rollback and the resume;
  the page loads no resource and raises no script error; a screenshot is saved.
- the conformance table for one op: one HTML row per JSON row, statuses as classes.
About 35 s (two short ds-tiny runs).
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
needs_chromium = pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed (apt-get install chromium)")

MALFORMED = ['not json', '{"step": "x"}', '[1, 2]', '{"step": 9, "loss": "bad"}', '{"loss": 1.0}', '{"step": 3, "moe": 7}']


@pytest.fixture(scope="module")
def run(tandem, shakespeare_path, tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    src = root / "slice.txt"
    src.write_text(shakespeare_path.read_text(encoding="utf-8")[:30000], encoding="utf-8")
    tandem("prepare", "--input", src, "--tokenizer", "bpe:300", "--out", root / "data")
    run = root / "run"
    args = ["train", "--config", "ds-tiny", "--data", root / "data", "--out", run, "--set", "batch_size=4",
            "--set", "block_size=32", "--set", "eval_interval=2", "--set", "eval_steps=1", "--checkpoint-every", "2",
            "--seed", "1"]
    tandem(*args, "--steps", "4", "--inject-nan-at", "3")                      # a skip
    tandem(*args, "--steps", "8", "--resume", "--inject-nan-at", "6,7,8")      # a resume, 3 skips, a rollback
    with open(run / "metrics.jsonl", "a") as f:
        f.write("\n".join(MALFORMED) + "\n")
    return run


def open_page(p, url: str, shot: Path):
    browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True)
    page = browser.new_page(viewport={"width": 1500, "height": 1000})
    errors, requests = [], []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("request", lambda r: requests.append(r.url) if not r.url.startswith("file:") else None)
    page.goto(url)
    page.mouse.move(300, 300)  # runs the hover read-out script
    page.screenshot(path=str(shot), full_page=True)
    print(f"\nscreenshot: {shot}")
    return browser, page, errors, requests


@needs_chromium
def test_run_report_in_chromium(tandem, run, tmp_path):
    from playwright.sync_api import sync_playwright

    out = tmp_path / "report.html"
    r = tandem("report", "--run", run, "--out", out)
    assert f"{len(MALFORMED)} malformed metrics line(s) skipped" in r.stdout, r.stdout
    html = out.read_text()
    assert "http://" not in html and "https://" not in html and "src=" not in html  # self-contained

    expected = ["loss", "loss-tokens", "lr", "grad-norm", "tokens-per-s", "moe-max-over-mean"] + \
        [f"moe-share-{i}" for i in range(4)]  # layers 1-3 and the MTP module's MoE layer
    with sync_playwright() as p:
        browser, page, errors, requests = open_page(p, out.as_uri(), tmp_path / "report.png")
        try:
            assert not errors, errors
            assert not requests, requests
            charts = page.eval_on_selector_all("figure.chart", "els => els.map(e => e.id)")
            assert charts == [f"chart-{c}" for c in expected], charts
            for c in expected:
                fig = page.locator(f"#chart-{c}")
                assert int(fig.get_attribute("data-points")) > 0, c
                if c.startswith("moe-share"):
                    assert fig.locator("rect.cell").count() == 8 * 4, c  # 8 experts x 4 eval steps
                else:
                    pts = page.eval_on_selector_all(f"#chart-{c} polyline.series",
                                                    "els => els.map(e => e.points.numberOfItems)")
                    assert pts and all(n > 0 for n in pts), (c, pts)
            # Steps 1..8 on the curves: the rollback's replay replaced the abandoned steps 5..8;
            # steps whose loss was NaN have no point.
            train = page.locator("#chart-loss polyline[data-name='train loss']")
            assert int(train.get_attribute("data-n")) == 8 - 1  # step 3's NaN (the replayed 6..8 are finite)
            kinds = page.eval_on_selector_all("#chart-loss line.marker", "els => els.map(e => e.classList[1])")
            assert kinds.count("skip") == 4 and kinds.count("rollback") == 1 and kinds.count("resume") == 1, kinds
        finally:
            browser.close()


@needs_chromium
@pytest.mark.skipif(shutil.which("mpirun") is None, reason="OpenMPI's mpirun is not installed (scripts/setup.sh installs it)")
def test_data_parallel_charts(tandem, run, tmp_path):
    """2 MPI ranks: per-rank throughput and communication bytes are charted."""
    import subprocess
    from playwright.sync_api import sync_playwright

    dp = tmp_path / "dp"
    subprocess.run(["mpirun", "--allow-run-as-root", "--oversubscribe", "-np", "2", str(tandem.binary), "train",
                    "--config", "baby-gpt", "--data", run.parent / "data", "--out", dp, "--steps", "3",
                    "--set", "n_layer=1", "--set", "n_embd=32", "--set", "batch_size=4", "--set", "block_size=32",
                    "--set", "eval_interval=3", "--set", "eval_steps=1", "--seed", "1"], check=True, capture_output=True)
    tandem("report", "--run", dp, "--out", tmp_path / "dp.html")
    with sync_playwright() as p:
        browser, page, errors, requests = open_page(p, (tmp_path / "dp.html").as_uri(), tmp_path / "dp.png")
        try:
            assert not errors and not requests, (errors, requests)
            for c in ("tokens-per-s-per-rank", "comm-bytes"):
                assert int(page.locator(f"#chart-{c}").get_attribute("data-points")) == 3, c
            assert page.locator("#chart-loss line.marker").count() == 0  # the "parallel" event is not a marker
        finally:
            browser.close()


def test_report_refuses_a_directory_without_metrics(tandem, tmp_path):
    r = tandem.run("report", "--run", tmp_path, "--out", tmp_path / "r.html")
    assert r.returncode != 0 and "metrics.jsonl: cannot open" in r.stderr, r.describe()


@needs_chromium
def test_conform_html_in_chromium(tandem, tmp_path):
    from playwright.sync_api import sync_playwright

    tandem("conform", "--op", "add", "--json", tmp_path / "c.json", "--html", tmp_path / "c.html")
    rows = json.loads((tmp_path / "c.json").read_text())["rows"]
    with sync_playwright() as p:
        browser, page, errors, requests = open_page(p, (tmp_path / "c.html").as_uri(), tmp_path / "conform.png")
        try:
            assert not errors and not requests, (errors, requests)
            got = page.eval_on_selector_all("#rows tr.row", "els => els.map(e => [...e.cells].map(c => c.textContent))")
            assert len(got) == len(rows)
            for g, want in zip(got, rows):
                assert g[:5] == [want["op"], want["dtype"], want["case"], want["node"], want["metric"]]
                assert g[10] == want["status"]
            cells = {(r["op"], r["dtype"]) for r in rows}  # all PASS on the cpu backend
            assert page.locator("#matrix td.PASS").count() == len(cells)
            assert page.locator("#rows svg.ratio").count() == len(rows)
        finally:
            browser.close()
