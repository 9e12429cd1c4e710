"""Soak driver for `tandem serve` (bench/soak_serve.sh): a bounded loopback client mix for M minutes.

Client kinds, chosen at random per request by each worker thread:
  completion (non-streaming), chat-stream (SSE read to [DONE]), cancel (streaming, closed after
  the first chunk), malformed (bad JSON / wrong types / unknown fields: must be 4xx), oversized
  (a prompt past the context: 400 context_length_exceeded; a body past the size limit: 413),
  slow-reader (streaming, 0.2 s between reads of 64 bytes).
Every interval it prints requests, errors by class, latency p50/p99 of the completions and
streamed chats (to the last byte), and
the server's RSS; at the end the RSS growth after the first minute, the 5xx count for valid
requests and whether the server is still alive. Exit status 1 if the server died or answered a
valid request with a 5xx or a malformed one with anything but a 4xx."""
import argparse
import http.client
import json
import random
import statistics
import threading
import time
from collections import Counter


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.counts = Counter()
        self.latencies = []

    def add(self, kind, outcome, latency=None):
        with self.lock:
            self.counts[(kind, outcome)] += 1
            if latency is not None:
                self.latencies.append(latency)

    def take(self):
        with self.lock:
            c, l = self.counts, self.latencies
            self.counts, self.latencies = Counter(), []
        return c, l


def request(port, body, stream_read=None, timeout=120):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    path = "/v1/chat/completions" if b'"messages"' in body[:200] else "/v1/completions"
    conn.request("POST", path, body=body, headers={"Content-Type": "application/json"})
    resp = conn.getresponse()
    status = resp.status
    if stream_read:
        stream_read(resp)
    else:
        resp.read()
    conn.close()
    return status


def worker(port, model, stats, stop_at, seed, context):
    rng = random.Random(seed)
    prompts = ["ROMEO:", "First Citizen:\nWe are", "KING RICHARD III:\nNow is the", "What say you", "O"]
    while time.time() < stop_at:
        kind = rng.choices(["completion", "chat-stream", "cancel", "malformed", "oversized", "slow-reader"],
                           weights=[30, 25, 10, 15, 10, 10])[0]
        t0 = time.time()
        try:
            if kind == "completion":
                body = {"model": model, "prompt": rng.choice(prompts), "max_tokens": rng.randint(1, 24),
                        "temperature": rng.choice([0, 0.8]), "seed": rng.randint(0, 1 << 30)}
                status = request(port, json.dumps(body).encode())
            elif kind in ("chat-stream", "cancel", "slow-reader"):
                body = {"model": model, "stream": True, "max_tokens": rng.randint(4, 32),
                        "messages": [{"role": "user", "content": rng.choice(prompts)}]}

                def read(resp, kind=kind):
                    if kind == "cancel":
                        resp.read1(64)  # the first chunk, then hang up mid-stream
                        resp.close()
                    elif kind == "slow-reader":
                        while resp.read(64):
                            time.sleep(0.2)
                    else:
                        resp.read()
                status = request(port, json.dumps(body).encode(), read)
            elif kind == "malformed":
                body = rng.choice([b"{", b"[]", b"null", b'{"model": 5}', b'{"model": "%s", "prompt": 7}' % model.encode(),
                                   b'{"model": "%s", "messages": [{"role": "robot"}]}' % model.encode(),
                                   b'{"model": "%s", "prompt": "a", "temperature": "hot"}' % model.encode(),
                                   b'{"model": "%s", "messages": [{"role": "user", "content": [{"type": 1}]}]}' % model.encode(),
                                   bytes(rng.randrange(256) for _ in range(rng.randint(1, 200)))])
                status = request(port, body)
            else:  # oversized: a prompt past the context, or a body past the server's limit
                if rng.random() < 0.5:
                    body = json.dumps({"model": model, "prompt": "a" * (context * 4)}).encode()
                else:
                    body = json.dumps({"model": model, "prompt": "a" * (9 << 20)}).encode()
                status = request(port, body)
        except (ConnectionError, http.client.HTTPException, OSError) as e:
            stats.add(kind, f"transport:{type(e).__name__}")
            continue
        latency = time.time() - t0
        expect_4xx = kind in ("malformed", "oversized")
        if status >= 500:
            outcome = "5xx" if not expect_4xx else "5xx-for-bad-input"
        elif expect_4xx:
            outcome = "4xx(expected)" if 400 <= status < 500 else f"unexpected-{status}"
        else:
            outcome = "ok" if status == 200 else f"{status}"
        # Latency of what a normal client sees: slow readers and cancels time themselves, not the server.
        timed = kind in ("completion", "chat-stream") and status == 200
        stats.add(kind, outcome, latency if timed else None)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--pid", type=int, required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--context", type=int, required=True)
    ap.add_argument("--minutes", type=float, default=5)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--interval", type=float, default=30)
    a = ap.parse_args()
    stats = Stats()
    start = time.time()
    stop_at = start + a.minutes * 60
    threads = [threading.Thread(target=worker, args=(a.port, a.model, stats, stop_at, i, a.context), daemon=True)
               for i in range(a.clients)]
    for t in threads:
        t.start()
    rss0 = rss_kb(a.pid)
    rss_1min = None
    total = Counter()
    print(f"soak: {a.clients} clients for {a.minutes} min; server RSS at start {rss0 / 1024:.1f} MiB", flush=True)
    print(f"{'t(s)':>6} {'reqs':>6} {'ok':>6} {'4xx-exp':>7} {'5xx':>4} {'other':>5} {'p50(s)':>7} {'p99(s)':>7} {'RSS(MiB)':>9}")
    while True:
        time.sleep(min(a.interval, max(0.5, stop_at - time.time() + 0.5)))
        alive = any(t.is_alive() for t in threads)
        if time.time() > stop_at and alive:
            continue  # draining the last requests: reported in the final interval
        counts, lats = stats.take()
        total.update(counts)
        t = time.time() - start
        try:
            rss = rss_kb(a.pid)
        except FileNotFoundError:
            print("soak: the server died", flush=True)
            rss = 0
        if rss_1min is None and t >= 60:
            rss_1min = rss
        n = sum(counts.values())
        ok = sum(v for (k, o), v in counts.items() if o == "ok")
        exp = sum(v for (k, o), v in counts.items() if o == "4xx(expected)")
        fives = sum(v for (k, o), v in counts.items() if o.startswith("5xx"))
        p50 = statistics.median(lats) if lats else float("nan")
        p99 = statistics.quantiles(lats, n=100)[98] if len(lats) >= 2 else float("nan")
        print(f"{t:6.0f} {n:6d} {ok:6d} {exp:7d} {fives:4d} {n - ok - exp - fives:5d} {p50:7.3f} {p99:7.3f} {rss / 1024:9.1f}",
              flush=True)
        if rss == 0 or not alive:
            break
    rss1 = rss_kb(a.pid) if rss else 0
    print("soak: outcomes by client kind:")
    for (k, o), v in sorted(total.items()):
        print(f"  {k:12s} {o:28s} {v}")
    bad = sum(v for (k, o), v in total.items() if o.startswith("5xx") or o.startswith("unexpected"))
    base = rss_1min or rss0
    growth = (rss1 - base) / base * 100 if base and rss1 else float("nan")
    print(f"soak: requests {sum(total.values())}; server RSS start {rss0 / 1024:.1f} MiB, after 1 min "
          f"{base / 1024:.1f} MiB, end {rss1 / 1024:.1f} MiB ({growth:+.1f}% since the first minute); "
          f"5xx or wrong status: {bad}; server {'alive' if rss1 else 'DEAD'}")
    return 1 if bad or not rss1 else 0


if __name__ == "__main__":
    raise SystemExit(main())
