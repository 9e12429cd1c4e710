"""`tandem serve`: the OpenAI-compatible server, against a live process.

A tiny character-level GPT-2 is trained for a few steps (quality is irrelevant here: the tests
check the protocol, batching and robustness), then served on a free loopback port. The official
`openai` client drives the happy paths; raw HTTP (http.client) sends what a client library would
refuse to send (malformed JSON, wrong types, oversized bodies) and reads SSE byte for byte.
"""
from __future__ import annotations

import http.client
import json
import queue
import re
import signal
import statistics
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import openai
import pytest

MODEL = "tiny"
CONTEXT = 512  # n_positions of the test model


# ---- fixtures ----

@pytest.fixture(scope="module")
def tiny_model(tandem, session_tmp: Path, shakespeare_path: Path) -> Path:
    data, run = session_tmp / "serve-data", session_tmp / "serve-run"
    if not (run / "checkpoints").exists():
        tandem("prepare", "--input", shakespeare_path, "--tokenizer", "char", "--out", data)
        tandem("train", "--config", "baby-gpt", "--data", data, "--out", run, "--steps", "10",
               "--set", "n_layer=2", "--set", "n_embd=64", "--set", f"n_positions={CONTEXT}")
    return run


class Server:
    """A `tandem serve` process on a free loopback port (--port 0; the port is read from the
    ready line it prints)."""

    def __init__(self, binary: Path, model: Path, log: Path, *args: str):
        self.log_path = log
        self.log = open(log, "w")
        self.proc = subprocess.Popen(
            [str(binary), "serve", "--model", str(model), "--port", "0", "--model-name", MODEL, *args],
            stdout=subprocess.PIPE, stderr=self.log, text=True)
        lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=lambda: [lines.put(l) for l in self.proc.stdout], daemon=True).start()
        try:
            ready = lines.get(timeout=120)
        except queue.Empty:
            self.proc.kill()
            pytest.fail(f"tandem serve printed nothing in 120 s; stderr:\n{log.read_text()}")
        m = re.search(r"http://127\.0\.0\.1:(\d+)/", ready)
        assert m, f"unexpected ready line: {ready!r}; stderr:\n{log.read_text()}"
        self.port = int(m.group(1))
        self.base_url = f"http://127.0.0.1:{self.port}"

    def client(self) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.base_url + "/v1", api_key="unused", max_retries=0, timeout=60)

    def stop(self, timeout: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            pytest.fail(f"tandem serve did not exit within {timeout} s of SIGTERM")
        finally:
            self.log.close()

    def stderr(self) -> str:
        return self.log_path.read_text()


@pytest.fixture(scope="module")
def server(tandem_bin, tiny_model, tmp_path_factory):
    s = Server(tandem_bin, tiny_model, tmp_path_factory.mktemp("serve") / "serve.log",
               "--max-batch", "8", "--max-queue", "64")
    yield s
    code = s.stop()
    assert code == 0, f"exit code {code} after SIGTERM; stderr:\n{s.stderr()}"


@pytest.fixture(scope="module")
def client(server) -> openai.OpenAI:
    return server.client()


# ---- raw HTTP helpers ----

def request(port: int, method: str, path: str, body=None, headers=None, timeout: float = 60):
    """(status, headers dict (lower-case names), body bytes)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    if isinstance(body, (dict, list)):
        body = json.dumps(body)
    conn.request(method, path, body=body, headers={"Content-Type": "application/json", **(headers or {})})
    r = conn.getresponse()
    data = r.read()
    conn.close()
    return r.status, {k.lower(): v for k, v in r.getheaders()}, data


def sse_events(raw: bytes) -> list[str]:
    """The `data:` payloads of an SSE body, in order (comments skipped)."""
    out = []
    for event in raw.decode().split("\n\n"):
        for line in event.split("\n"):
            if line.startswith("data: "):
                out.append(line[len("data: "):])
    return out


def metric(port: int, name: str, labels: str = "") -> float:
    _, _, body = request(port, "GET", "/metrics")
    m = re.search(rf"^{re.escape(name + labels)} (\S+)$", body.decode(), re.M)
    return float(m.group(1)) if m else 0.0


def check_error(status, body, want_status, param=None, code=None):
    assert status == want_status, (status, body)
    err = json.loads(body)["error"]
    assert set(err) == {"message", "type", "param", "code"}, err
    assert err["message"] and err["type"], err
    if param is not None:
        assert err["param"] == param, err
    if code is not None:
        assert err["code"] == code, err


# ---- endpoints ----

def test_models_health_metrics_and_page(server):
    status, _, body = request(server.port, "GET", "/v1/models")
    assert status == 200
    models = json.loads(body)
    assert models["object"] == "list" and [m["id"] for m in models["data"]] == [MODEL]
    assert request(server.port, "GET", "/health")[0] == 200
    status, headers, body = request(server.port, "GET", "/metrics")
    assert status == 200 and headers["content-type"].startswith("text/plain")
    for name in ("tandem_http_responses_total", "tandem_prompt_tokens_total", "tandem_generated_tokens_total",
                 "tandem_generated_tokens_per_second", "tandem_queue_depth", "tandem_batch_size",
                 "tandem_kv_cache_usage_ratio"):
        assert f"# TYPE {name} " in body.decode(), name
    status, headers, body = request(server.port, "GET", "/")
    assert status == 200 and headers["content-type"].startswith("text/html")
    assert b"/v1/chat/completions" in body


def test_completion(client):
    r = client.completions.create(model=MODEL, prompt="ROMEO:", max_tokens=12, temperature=0)
    assert r.object == "text_completion" and r.model == MODEL
    assert len(r.choices) == 1 and r.choices[0].finish_reason == "length"
    assert r.usage.prompt_tokens == len("ROMEO:")  # one token per character
    assert r.usage.completion_tokens == 12 and r.usage.total_tokens == 18
    assert len(r.choices[0].text) == 12


def test_chat(client):
    r = client.chat.completions.create(model=MODEL, messages=[{"role": "system", "content": "Be brief."},
                                                              {"role": "user", "content": "Hello"}],
                                       max_tokens=10, temperature=0)
    assert r.object == "chat.completion"
    c = r.choices[0]
    assert c.message.role == "assistant" and isinstance(c.message.content, str)
    assert c.finish_reason in ("stop", "length")
    # The default template: "<role>: <content>\n" per message, then "assistant:".
    assert r.usage.prompt_tokens == len("system: Be brief.\nuser: Hello\nassistant:")


def test_streaming_equals_non_streaming(client, server):
    full = client.completions.create(model=MODEL, prompt="KING:", max_tokens=16, temperature=0)
    pieces, finish = [], None
    for chunk in client.completions.create(model=MODEL, prompt="KING:", max_tokens=16, temperature=0, stream=True):
        pieces.append(chunk.choices[0].text)
        finish = chunk.choices[0].finish_reason or finish
    assert "".join(pieces) == full.choices[0].text and finish == "length"
    # On the wire: SSE events, the last one `data: [DONE]`.
    status, headers, raw = request(server.port, "POST", "/v1/completions",
                                   {"model": MODEL, "prompt": "KING:", "max_tokens": 4, "stream": True})
    assert status == 200 and headers["content-type"].startswith("text/event-stream")
    assert raw.endswith(b"data: [DONE]\n\n")
    events = sse_events(raw)
    assert events[-1] == "[DONE]" and json.loads(events[-2])["choices"][0]["finish_reason"] == "length"


def test_chat_streaming_with_usage(client):
    stream = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Speak"}],
                                            max_tokens=8, temperature=0, stream=True,
                                            stream_options={"include_usage": True})
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes in (["stop"], ["length"])
    assert chunks[-1].usage.completion_tokens >= 1 and chunks[-1].choices == []
    full = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Speak"}],
                                          max_tokens=8, temperature=0)
    assert text == full.choices[0].message.content


def test_seed(client):
    def sample(seed):
        return client.completions.create(model=MODEL, prompt="To be", max_tokens=24, temperature=1.0,
                                         top_p=0.95, seed=seed).choices[0].text
    a, b, c = sample(7), sample(7), sample(8)
    assert a == b
    assert a != c  # 24 characters sampled at temperature 1: a collision would be astronomically unlikely
    # top_k is an extension (as in vLLM and llama.cpp's servers), sent as an extra body field.
    k1 = [client.completions.create(model=MODEL, prompt="To be", max_tokens=10, temperature=1.0, seed=s,
                                    extra_body={"top_k": 1}).choices[0].text for s in (1, 2)]
    greedy = client.completions.create(model=MODEL, prompt="To be", max_tokens=10, temperature=0).choices[0].text
    assert k1 == [greedy, greedy]


def test_stop_strings(client):
    greedy = client.completions.create(model=MODEL, prompt="HAMLET:", max_tokens=40, temperature=0).choices[0].text
    stop = greedy[10:13]
    assert len(stop) == 3
    r = client.completions.create(model=MODEL, prompt="HAMLET:", max_tokens=40, temperature=0, stop=[stop, "\x01"])
    assert r.choices[0].finish_reason == "stop"
    assert r.choices[0].text == greedy[:greedy.index(stop)]
    # Streaming holds back text that may be the start of a stop string, and never sends the stop.
    streamed = "".join(c.choices[0].text for c in client.completions.create(
        model=MODEL, prompt="HAMLET:", max_tokens=40, temperature=0, stop=stop, stream=True))
    assert streamed == r.choices[0].text


# ---- bad input: 4xx with an OpenAI error object, and the server carries on ----

LONG_PROMPT = "a" * (CONTEXT + 10)

BAD_REQUESTS = [
    # (path, body, status, param, code)
    ("/v1/completions", "{not json", 400, None, "invalid_json"),
    ("/v1/completions", "[1, 2]", 400, None, None),
    ("/v1/completions", {"prompt": "hi"}, 400, "model", None),
    ("/v1/completions", {"model": MODEL}, 400, "prompt", None),
    ("/v1/completions", {"model": 3, "prompt": "hi"}, 400, "model", None),
    ("/v1/completions", {"model": MODEL, "prompt": 42}, 400, "prompt", None),
    ("/v1/completions", {"model": MODEL, "prompt": "hi", "max_tokens": "ten"}, 400, "max_tokens", None),
    ("/v1/completions", {"model": MODEL, "prompt": "hi", "max_tokens": 0}, 400, "max_tokens", None),
    ("/v1/completions", {"model": MODEL, "prompt": "hi", "max_tokens": 10**12}, 400, "max_tokens", None),
    ("/v1/completions", {"model": MODEL, "prompt": "hi", "max_tokens": CONTEXT + 1}, 400, "max_tokens", None),
    ("/v1/completions", {"model": MODEL, "prompt": "hi", "temperature": "hot"}, 400, "temperature", None),
    ("/v1/completions", {"model": MODEL, "prompt": "hi", "temperature": 2.5}, 400, "temperature", None),
    ("/v1/completions", {"model": MODEL, "prompt": "hi", "top_p": 1.5}, 400, "top_p", None),
    ("/v1/completions", {"model": MODEL, "prompt": "hi", "top_k": -1}, 400, "top_k", None),
    ("/v1/completions", {"model": MODEL, "prompt": "hi", "seed": "abc"}, 400, "seed", None),
    ("/v1/completions", {"model": MODEL, "prompt": "hi", "stop": 5}, 400, "stop", None),
    ("/v1/completions", {"model": MODEL, "prompt": "hi", "stop": ["a", "b", "c", "d", "e"]}, 400, "stop", None),
    ("/v1/completions", {"model": MODEL, "prompt": "hi", "stop": [""]}, 400, "stop", None),
    ("/v1/completions", {"model": MODEL, "prompt": "hi", "stream": "yes"}, 400, "stream", None),
    ("/v1/completions", {"model": MODEL, "prompt": "hi", "n": 2}, 400, "n", "unsupported"),
    ("/v1/completions", {"model": MODEL, "prompt": ["a", "b"]}, 400, "prompt", "unsupported"),
    ("/v1/completions", {"model": MODEL, "prompt": ""}, 400, "prompt", None),
    ("/v1/completions", {"model": MODEL, "prompt": "\u20ac uro"}, 400, "prompt", None),  # not in the vocabulary
    ("/v1/completions", {"model": MODEL, "prompt": LONG_PROMPT}, 400, "prompt", "context_length_exceeded"),
    ("/v1/completions", {"model": "gpt-4", "prompt": "hi"}, 404, "model", "model_not_found"),
    ("/v1/chat/completions", {"model": MODEL}, 400, "messages", None),
    ("/v1/chat/completions", {"model": MODEL, "messages": "hi"}, 400, "messages", None),
    ("/v1/chat/completions", {"model": MODEL, "messages": []}, 400, "messages", None),
    ("/v1/chat/completions", {"model": MODEL, "messages": [{"content": "hi"}]}, 400, "messages[0].role", None),
    ("/v1/chat/completions", {"model": MODEL, "messages": [{"role": "wizard", "content": "hi"}]}, 400,
     "messages[0].role", None),
    ("/v1/chat/completions", {"model": MODEL, "messages": [{"role": "user", "content": 5}]}, 400,
     "messages[0].content", None),
    # A content part whose "type" is not a string was a 500 (a JSON exception escaping; tests/fuzz).
    ("/v1/chat/completions", {"model": MODEL, "messages": [{"role": "user", "content": [{"type": 1, "text": "a"}]}]},
     400, "messages[0].content", None),
    ("/v1/chat/completions", {"model": MODEL, "messages": [{"role": "user", "content": LONG_PROMPT}]}, 400,
     "messages", "context_length_exceeded"),
    ("/v1/chat/completions", {"model": MODEL, "messages": [{"role": "user", "content": "hi"}],
                              "max_completion_tokens": -3}, 400, "max_completion_tokens", None),
    ("/v1/chat/completions", {"model": "nope", "messages": [{"role": "user", "content": "hi"}]}, 404, "model",
     "model_not_found"),
]


@pytest.mark.parametrize("path,body,status,param,code", BAD_REQUESTS,
                         ids=[f"{i}-{p.split('/')[-1]}" for i, (p, *_rest) in enumerate(BAD_REQUESTS)])
def test_bad_request(server, path, body, status, param, code):
    got_status, _, got = request(server.port, "POST", path, body)
    check_error(got_status, got, status, param, code)


def test_oversized_body_unknown_endpoint_and_still_healthy(server):
    status, _, body = request(server.port, "POST", "/v1/completions",
                              json.dumps({"model": MODEL, "prompt": "x" * (2 << 20)}))
    check_error(status, body, 413)
    status, _, body = request(server.port, "GET", "/v1/nothing-here")
    check_error(status, body, 404)
    assert request(server.port, "GET", "/health")[0] == 200
    assert metric(server.port, "tandem_http_responses_total", '{code="413"}') >= 1


def test_errors_through_the_openai_client(client):
    with pytest.raises(openai.NotFoundError) as e:
        client.completions.create(model="gpt-4", prompt="hi")
    assert e.value.body["code"] == "model_not_found"
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model=MODEL, prompt=LONG_PROMPT)
    assert e.value.body["code"] == "context_length_exceeded"
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=0)
    assert e.value.body["param"] == "max_tokens"


# ---- batching ----

PROMPTS = ["ROMEO:", "JULIET:\nO", "First Citizen:\n", "KING RICHARD", "To be, or not", "MENENIUS:\nWhat",
           "Thou art", "My lord, "]


def start_all(port: int, bodies: list[dict]) -> list[http.client.HTTPConnection]:
    """Sends every request before reading any response, so they reach the server together."""
    conns = [http.client.HTTPConnection("127.0.0.1", port, timeout=120) for _ in bodies]
    for c in conns:
        c.connect()
    for c, b in zip(conns, bodies):
        c.request("POST", "/v1/completions", body=json.dumps(b), headers={"Content-Type": "application/json"})
    return conns


def test_greedy_alone_equals_greedy_in_a_batch_of_8(server):
    bodies = [{"model": MODEL, "prompt": p, "max_tokens": 120, "temperature": 0} for p in PROMPTS]
    alone = [json.loads(request(server.port, "POST", "/v1/completions", b)[2])["choices"][0]["text"] for b in bodies]
    steps_before = metric(server.port, "tandem_engine_steps_total")
    conns = start_all(server.port, bodies)
    batched = [json.loads(c.getresponse().read())["choices"][0]["text"] for c in conns]
    steps = metric(server.port, "tandem_engine_steps_total") - steps_before
    assert batched == alone
    # They really shared the batch: 8 x 120 tokens took far fewer than 8 x 120 engine steps.
    assert steps < 2 * 120, steps


def test_a_one_slot_server_decodes_like_the_8_slot_server(server, tandem_bin, tiny_model, tmp_path):
    """A 1-slot server decodes with 1-row steps, the 8-slot one with 8-row steps (free slots padded
    with dummy rows). Each row of the decode matmuls is computed by the same float operations
    whatever the other rows (src/backends/cpu/gemv.h), so greedy and seeded sampled outputs match."""
    bodies = [{"model": MODEL, "prompt": p, "max_tokens": 60, "temperature": 0} for p in PROMPTS[:4]]
    bodies += [{"model": MODEL, "prompt": p, "max_tokens": 60, "temperature": 0.9, "top_k": 20, "seed": 3}
               for p in PROMPTS[4:]]
    def texts(port):
        return [json.loads(request(port, "POST", "/v1/completions", b)[2])["choices"][0]["text"] for b in bodies]
    eight = texts(server.port)
    s = Server(tandem_bin, tiny_model, tmp_path / "serve.log", "--max-batch", "1")
    try:
        one = texts(s.port)
    finally:
        assert s.stop() == 0, s.stderr()
    assert one == eight


def test_client_disconnect_cancels_and_frees_the_slot(server):
    cancelled_before = metric(server.port, "tandem_completions_total", '{finish_reason="cancelled"}')
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    conn.request("POST", "/v1/completions", headers={"Content-Type": "application/json"},
                 body=json.dumps({"model": MODEL, "prompt": "A", "max_tokens": CONTEXT - 2, "stream": True}))
    r = conn.getresponse()
    assert r.status == 200
    assert r.readline().startswith(b"data: ")  # generation has started
    conn.sock.close()  # vanish without reading the rest
    conn.close()
    deadline = time.time() + 20
    while time.time() < deadline:
        if (metric(server.port, "tandem_completions_total", '{finish_reason="cancelled"}') > cancelled_before
                and metric(server.port, "tandem_batch_size") == 0):
            break
        time.sleep(0.05)
    else:
        pytest.fail("the abandoned request was not cancelled")


def test_queue_full_gets_503_with_retry_after(tandem_bin, tiny_model, tmp_path):
    s = Server(tandem_bin, tiny_model, tmp_path / "serve.log", "--max-batch", "1", "--max-queue", "1")
    try:
        body = {"model": MODEL, "prompt": "A", "max_tokens": CONTEXT - 2, "temperature": 0}
        conns = start_all(s.port, [body] * 8)
        results = []
        for c in conns:
            r = c.getresponse()
            results.append((r.status, r.getheader("Retry-After"), r.read()))
        statuses = sorted(st for st, _, _ in results)
        # One runs, one waits in the queue; the rest are refused while both are taken.
        assert statuses.count(200) >= 2 and statuses.count(503) >= 1, statuses
        assert set(statuses) <= {200, 503}, statuses
        for st, retry, raw in results:
            if st == 503:
                assert retry == "1"
                check_error(st, raw, 503, code="server_busy")
            else:
                assert json.loads(raw)["usage"]["completion_tokens"] == CONTEXT - 2
    finally:
        assert s.stop() == 0, s.stderr()


def test_sigterm_finishes_running_streams_and_exits_0(tandem_bin, tiny_model, tmp_path):
    s = Server(tandem_bin, tiny_model, tmp_path / "serve.log")
    conn = http.client.HTTPConnection("127.0.0.1", s.port, timeout=60)
    conn.request("POST", "/v1/completions", headers={"Content-Type": "application/json"},
                 body=json.dumps({"model": MODEL, "prompt": "B", "max_tokens": 300, "stream": True}))
    r = conn.getresponse()
    first = r.readline()
    assert first.startswith(b"data: ")
    s.proc.send_signal(signal.SIGTERM)
    rest = first + r.read()
    events = sse_events(rest)
    assert events[-1] == "[DONE]"
    last = json.loads(events[-2])
    assert last.get("choices", [{}])[0].get("finish_reason") == "length" or last["error"]["code"] == "shutting_down"
    assert s.stop() == 0, s.stderr()
    with pytest.raises(OSError):
        request(s.port, "GET", "/health", timeout=5)


# ---- load ----

MALFORMED = [
    ("/v1/completions", "{\"model\": "),
    ("/v1/completions", json.dumps({"model": MODEL, "prompt": "hi", "max_tokens": "many", "stream": True})),
    ("/v1/chat/completions", json.dumps({"model": MODEL, "stream": True})),
    ("/v1/completions", json.dumps({"model": "other", "prompt": "hi", "stream": True})),
    ("/v1/completions", json.dumps({"model": MODEL, "prompt": LONG_PROMPT, "stream": True})),
]


def test_load_32_clients_x_20_requests(server):
    clients, per_client, max_tokens = 32, 20, 8
    ttft, tokens, failures = [], [0], []
    lock = threading.Lock()

    def one_client(ci: int):
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=120)
        for ri in range(per_client):
            n = ci * per_client + ri
            if n % 10 == 3:  # 10% malformed
                path, body = MALFORMED[n % len(MALFORMED)]
                valid = False
            else:
                chat = n % 2 == 0
                body = {"model": MODEL, "max_tokens": max_tokens, "temperature": 0.8, "seed": n, "stream": True,
                        "stream_options": {"include_usage": True}}
                if chat:
                    body["messages"] = [{"role": "user", "content": PROMPTS[n % len(PROMPTS)]}]
                else:
                    body["prompt"] = PROMPTS[n % len(PROMPTS)]
                path, body, valid = ("/v1/chat/completions" if chat else "/v1/completions"), json.dumps(body), True
            t0 = time.perf_counter()
            try:
                conn.request("POST", path, body=body, headers={"Content-Type": "application/json"})
                r = conn.getresponse()
                if not valid:
                    raw = r.read()
                    if not 400 <= r.status < 500 or "error" not in json.loads(raw):
                        failures.append(f"malformed request {n}: {r.status} {raw[:200]!r}")
                    continue
                if r.status != 200:
                    failures.append(f"valid request {n}: status {r.status} {r.read()[:200]!r}")
                    continue
                first, count, done = None, 0, False
                while line := r.readline():
                    if not line.startswith(b"data: "):
                        continue
                    data = line[6:].strip()
                    if data == b"[DONE]":
                        done = True
                        continue
                    if first is None:
                        first = time.perf_counter() - t0
                    count += (json.loads(data).get("usage") or {}).get("completion_tokens", 0)
                if not done:
                    failures.append(f"valid request {n}: stream ended without [DONE]")
                with lock:
                    if first is not None:
                        ttft.append(first)
                    tokens[0] += count
            except Exception as e:  # noqa: BLE001 - any client-side failure is a test failure
                failures.append(f"request {n}: {type(e).__name__}: {e}")
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=120)
        conn.close()

    t0 = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(one_client, range(clients)))
    elapsed = time.perf_counter() - t0
    assert not failures, "\n".join(failures[:20])
    assert server.proc.poll() is None, "the server died"
    assert request(server.port, "GET", "/health")[0] == 200
    ttft.sort()
    p50, p99 = statistics.median(ttft), ttft[min(len(ttft) - 1, int(0.99 * len(ttft)))]
    print(f"\nload: {clients} clients x {per_client} requests ({len(ttft)} valid streams) in {elapsed:.1f} s; "
          f"TTFT p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms; {tokens[0] / elapsed:.0f} tokens/s aggregate")
    assert metric(server.port, "tandem_http_responses_total", '{code="500"}') == 0


# ---- browser ----

CHROMIUM = Path("/usr/bin/chromium")


@pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed (apt-get install chromium)")
def test_browser_chat_page_streams_a_reply(server, tmp_path):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        try:
            page = browser.new_page()
            page.goto(server.base_url + "/")
            page.wait_for_function("document.getElementById('model').textContent.startsWith('model ')")
            page.fill("#input", "Good morrow")
            page.click("#send")
            reply = page.locator(".msg.assistant").last
            reply.wait_for(state="attached", timeout=30_000)
            page.wait_for_selector(".msg.assistant[data-state=done]", timeout=60_000)
            text = reply.locator(".content").inner_text()
            shot = tmp_path / "chat.png"
            page.screenshot(path=str(shot))
            print(f"\nchat page screenshot: {shot}")
            assert page.locator(".msg.user .content").inner_text() == "Good morrow"
            assert len(text) > 0
            assert int(reply.get_attribute("data-chunks")) > 1  # streamed, not delivered at once
        finally:
            browser.close()
