#!/usr/bin/env python3
"""The load generator beside its floor and beside vLLM's Rust client, in one sitting.

Runs, alternating their order round by round, each client in a process of its own against a
fresh `sagellm-test-server` (its own process, one thread, `--no-comment`: vllm-bench fails every
request of a stream that opens with an SSE comment in a write of its own):

- `ours`: `sagellm-benchmark run --backend openai`;
- `raw floor`: `examples/loadgen_floor.rs` (hyper, one connection per worker, stamps only the
  first `data:` chunk and the end);
- `parse floor`: the same with SSE framing and a JSON parse of each event (`--parse`);
- `reqwest floor`: the raw floor's reading through one pooled `reqwest` client, the openai
  backend's HTTP stack (`--reqwest`), to price that stack against hyper alone;
- `hyper-util floor`: the same through hyper-util's pooled legacy client, the layer reqwest
  wraps (`--hyper-util`); `own-pool floor`: through a pool of our own of hyper `http1`
  handles (`--own-pool`);
- `vllm-bench`: vLLM's Rust client, when VLLM_BENCH names its binary (skipped with a note
  otherwise), with `--tokenizer gpt2 --prompt-token-ids` (its built-in tiktoken, no download).

Two scenarios:

- `instant`: the server answers at once (no TTFT, no gap), 32 prompt and 64 output tokens, one
  token per chunk: requests/s, client CPU per request, peak RSS, connections.
- `timed`: the server's first token at 50 ms from receiving the request, then one every 10 ms,
  100 tokens: the mean absolute error of each request's TTFT against the 50 ms scheduled.

For each run: req/s as the client itself reports it; client CPU (user + system, from
`wait4` of the client process only, never the server's, start and exit included) per request;
the client's peak RSS (GNU time's %M); the TCP connections the server accepted (its `/metrics` counter, minus
that scrape's own connection); the mean |TTFT - 50 ms| over the successful requests (timed).

    flock /work/coord/cargo.lock python3 scripts/bench-loadgen.py --bin-dir TARGET/release \
        --scenario instant --rounds 3
    VLLM_BENCH=/path/to/vllm-bench python3 scripts/bench-loadgen.py --scenario timed

Build first: `cargo build --release -p sagellm-benchmark -p sagellm-test-server` and
`cargo build --release -p sagellm-bench --example loadgen_floor`.
"""

import argparse
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

SCHEDULED_TTFT_MS = 50.0


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A sagellm-test-server process of its own, for one client run."""

    def __init__(self, binary, ttft_ms, itl_ms):
        self.port = free_port()
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--ttft-ms", str(ttft_ms),
             "--itl-ms", str(itl_ms), "--threads", "1", "--no-comment"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        if "listening" not in line:
            raise SystemExit(f"the test server did not start: {line!r} {self.proc.stderr.read()}")
        self.url = f"http://127.0.0.1:{self.port}"

    def scrape(self):
        """Connections accepted before this scrape, and the server's own mean TTFT (ms)."""
        text = urllib.request.urlopen(self.url + "/metrics", timeout=10).read().decode()
        def value(name):
            m = re.search(r"^" + re.escape(name) + r"(?:\{[^}]*\})? (\S+)$", text, re.M)
            return float(m.group(1)) if m else float("nan")
        connections = int(value("test_server_connections_total")) - 1
        n = value("vllm:time_to_first_token_seconds_count")
        s = value("vllm:time_to_first_token_seconds_sum")
        return connections, (s / n * 1e3 if n else float("nan"))

    def stop(self):
        self.proc.kill()
        self.proc.wait()


def run_client(cmd, cwd):
    """Runs one client; returns (exit status, CPU seconds, peak RSS MB, stdout, stderr).

    Through GNU time, whose fork is small: Linux carries a process's peak RSS across exec, so a
    client forked from this (larger) Python process would report Python's peak as its own.
    CPU comes from wait4 of `time`, which holds the client it reaped (microseconds, not the
    10 ms of time's own figures) and time's own few hundred microseconds."""
    out = open(os.path.join(cwd, "stdout"), "w+")
    err = open(os.path.join(cwd, "stderr"), "w+")
    peak = os.path.join(cwd, "peak-rss-kb")
    proc = subprocess.Popen(["/usr/bin/time", "-f", "%M", "-o", peak] + cmd, cwd=cwd,
                            stdout=out, stderr=err)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    out.seek(0)
    err.seek(0)
    cpu = usage.ru_utime + usage.ru_stime
    rss_kb = float(open(peak).read().split()[-1])
    return proc.returncode, cpu, rss_kb / 1024.0, out.read(), err.read()


def ours(binary, url, c, n, out_tokens, work):
    cfg = os.path.join(work, "w.toml")
    with open(cfg, "w") as f:
        f.write(f"[workloads.w]\nprompt_tokens = 32\noutput_tokens = {out_tokens}\n"
                f"num_requests = {n}\nconcurrency = {c}\nwarmup_requests = 0\n")
    cmd = [binary, "run", "--backend", "openai", "--base-url", url, "--model",
           "test-model", "--no-metrics", "--no-tokenize", "--config", cfg, "--workload", "w",
           "-q", "-o", os.path.join(work, "out")]
    def result():
        m = json.load(open(os.path.join(work, "out", "w_metrics.json")))
        ttfts = []
        with open(os.path.join(work, "out", "w_requests.jsonl")) as f:
            for line in f:
                r = json.loads(line)
                if r.get("success") and r.get("ttft_ms") is not None:
                    ttfts.append(r["ttft_ms"])
        return {"rps": m["request_throughput_rps"], "failed": m["failed_requests"],
                "completed": m["successful_requests"], "ttfts": ttfts,
                "retried": m.get("retried_requests")}
    return cmd, result


def floor(bins, url, c, n, out_tokens, work, client):
    path = os.path.join(work, "ttfts.txt")
    cmd = [bins["floor"], "--url", url, "--concurrency", str(c), "--requests", str(n),
           "--output-tokens", str(out_tokens), "--ttfts", path]
    cmd += ["--parse"] if "parse" in client else []
    cmd += ["--reqwest"] if "reqwest" in client else []
    cmd += ["--hyper-util"] if "hyper-util" in client else []
    cmd += ["--own-pool"] if "own-pool" in client else []
    def result(stdout):
        m = json.loads(stdout.strip().splitlines()[-1])
        ttfts = [float(x) for x in open(path).read().split()]
        return {"rps": m["request_throughput_rps"], "failed": m["failed"],
                "completed": m["requests"] - m["failed"], "ttfts": ttfts}
    return cmd, result


def vllm(bins, url, c, n, out_tokens, work):
    cmd = [bins["vllm"], "--backend", "openai", "--base-url", url, "--model", "test-model",
           "--tokenizer", "gpt2", "--prompt-token-ids", "--dataset-name", "random",
           "--random-input-len", "32", "--random-output-len", str(out_tokens),
           "--num-prompts", str(n), "--max-concurrency", str(c), "--disable-tqdm",
           "--num-warmups", "0", "--ready-check-timeout-sec", "10", "--save-result",
           "--save-detailed", "--result-dir", work, "--result-filename", "r.json"]
    def result():
        m = json.load(open(os.path.join(work, "r.json")))
        errors = m.get("errors") or []
        ttfts = [t * 1e3 for t, e in zip(m.get("ttfts", []), errors or [""] * n)
                 if t is not None and not e and t > 0]
        return {"rps": m["request_throughput"], "failed": m.get("failed", 0),
                "completed": m["completed"], "ttfts": ttfts}
    return cmd, result


def one_run(client, bins, scenario, c, n, out_tokens):
    ttft_ms, itl_ms = (0, 0) if scenario == "instant" else (int(SCHEDULED_TTFT_MS), 10)
    server = Server(bins["server"], ttft_ms, itl_ms)
    work = tempfile.mkdtemp(prefix="bench-loadgen-")
    try:
        if client.startswith("ours"):
            cmd, result = ours(bins[client], server.url, c, n, out_tokens, work)
        elif client == "vllm-bench":
            cmd, result = vllm(bins, server.url, c, n, out_tokens, work)
        else:
            cmd, result = floor(bins, server.url, c, n, out_tokens, work, client)
        status, cpu, rss, stdout, stderr = run_client(cmd, work)
        connections, server_ttft = server.scrape()
        if status != 0:
            raise SystemExit(f"{client} exited {status}: {' '.join(cmd)}\n{stdout[-2000:]}\n"
                             f"{stderr[-2000:]}")
        r = result(stdout) if "floor" in client else result()
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
    ttfts = r.pop("ttfts")
    r.update({
        "client": client, "scenario": scenario, "concurrency": c, "requests": n,
        "cpu_ms_per_req": cpu * 1e3 / n, "max_rss_mb": rss, "connections": connections,
        "server_ttft_ms": server_ttft,
        "mean_ttft_ms": statistics.fmean(ttfts) if ttfts else float("nan"),
        "ttft_error_ms": (statistics.fmean(abs(t - SCHEDULED_TTFT_MS) for t in ttfts)
                          if ttfts and scenario == "timed" else float("nan")),
    })
    return r


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--bin-dir", default=os.path.join(
        os.environ.get("CARGO_TARGET_DIR", "target"), "release"))
    p.add_argument("--scenario", choices=["instant", "timed", "all"], default="all")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--instant-concurrency", default="64",
                   help="comma-separated levels for the instant server (default 64)")
    p.add_argument("--instant-requests", type=int, default=10_000)
    p.add_argument("--timed-concurrency", default="1,100,500")
    p.add_argument("--clients", default="raw floor,parse floor,ours,vllm-bench")
    p.add_argument("--json", help="write every run's figures here")
    p.add_argument("--ours", action="append", default=[], metavar="LABEL=PATH",
                   help="another sagellm-benchmark binary, run as client `ours LABEL` (repeatable;"
                        " list it in --clients too), to measure a change before and after")
    args = p.parse_args()
    # The clients run in a temporary folder of their own.
    args.bin_dir = os.path.abspath(args.bin_dir)

    bins = {
        "ours": os.path.join(args.bin_dir, "sagellm-benchmark"),
        "server": os.path.join(args.bin_dir, "sagellm-test-server"),
        "floor": os.path.join(args.bin_dir, "examples", "loadgen_floor"),
        "vllm": os.environ.get("VLLM_BENCH", ""),
    }
    for extra in args.ours:
        label, _, path = extra.partition("=")
        bins[f"ours {label}"] = path
    for key in [k for k in bins if k != "vllm"]:
        if not os.access(bins[key], os.X_OK):
            raise SystemExit(f"{bins[key]} is not built; see this script's docstring")
    clients = [c.strip() for c in args.clients.split(",") if c.strip()]
    if "vllm-bench" in clients and not os.access(bins["vllm"], os.X_OK):
        print("note: VLLM_BENCH is unset or not executable; vllm-bench is skipped", flush=True)
        clients.remove("vllm-bench")

    levels = []
    if args.scenario in ("instant", "all"):
        levels += [("instant", int(c), args.instant_requests, 64)
                   for c in args.instant_concurrency.split(",")]
    if args.scenario in ("timed", "all"):
        # Three requests per worker (at least 20), each about 1.05 s long.
        levels += [("timed", int(c), max(20, 3 * int(c)), 100)
                   for c in args.timed_concurrency.split(",")]

    print(f"load average before: {open('/proc/loadavg').read().strip()}", flush=True)
    runs = []
    for rnd in range(args.rounds):
        order = clients[rnd % len(clients):] + clients[:rnd % len(clients)]
        if rnd % 2:
            order.reverse()
        print(f"round {rnd + 1}: {', '.join(order)}", flush=True)
        for scenario, c, n, out_tokens in levels:
            for client in order:
                r = one_run(client, bins, scenario, c, n, out_tokens)
                r["round"] = rnd + 1
                runs.append(r)
                print(f"  {scenario:7} c={c:<4} {client:11} {r['rps']:8.1f} req/s "
                      f"{r['cpu_ms_per_req']:6.3f} CPU ms/req {r['max_rss_mb']:6.1f} MB "
                      f"conn {r['connections']:4} TTFT {r['mean_ttft_ms']:7.2f} ms "
                      f"err {r['ttft_error_ms']:6.2f} ms failed {r['failed']}", flush=True)
    print(f"load average after: {open('/proc/loadavg').read().strip()}", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(runs, f, indent=1)

    print()
    print("| scenario | concurrency | client | req/s | CPU ms/req | max RSS MB | connections "
          "| mean TTFT ms | mean abs TTFT error ms | failed |")
    print("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|")
    for scenario, c, n, _ in levels:
        for client in clients:
            rs = [r for r in runs if r["scenario"] == scenario and r["concurrency"] == c
                  and r["client"] == client]
            def med(key, fmt):
                vals = [r[key] for r in rs]
                m = statistics.median(vals)
                lo, hi = min(vals), max(vals)
                return f"{m:{fmt}} ({lo:{fmt}}–{hi:{fmt}})" if len(vals) > 1 else f"{m:{fmt}}"
            conns = "/".join(str(r["connections"]) for r in rs)
            err = med("ttft_error_ms", ".2f") if scenario == "timed" else "–"
            print(f"| {scenario} | {c} | {client} | {med('rps', ',.0f')} | "
                  f"{med('cpu_ms_per_req', '.3f')} | {med('max_rss_mb', '.0f')} | {conns} | "
                  f"{med('mean_ttft_ms', '.2f')} | {err} | "
                  f"{sum(r['failed'] for r in rs)} |")
    floor_cpu = {(r["scenario"], r["concurrency"], r["round"]): r["cpu_ms_per_req"]
                 for r in runs if r["client"] == "raw floor"}
    floor_rps = {(r["scenario"], r["concurrency"], r["round"]): r["rps"]
                 for r in runs if r["client"] == "raw floor"}
    if floor_cpu:
        print()
        print("Against the raw floor of the same round (median over rounds):")
        for scenario, c, n, _ in levels:
            for client in clients:
                if client == "raw floor":
                    continue
                rs = [r for r in runs if r["scenario"] == scenario and r["concurrency"] == c
                      and r["client"] == client]
                key = lambda r: (r["scenario"], r["concurrency"], r["round"])
                cpu = statistics.median(r["cpu_ms_per_req"] / floor_cpu[key(r)] for r in rs)
                rps = statistics.median(r["rps"] / floor_rps[key(r)] for r in rs)
                print(f"  {scenario} c={c} {client}: req/s {rps:.2f}x, CPU/req {cpu:.2f}x")


if __name__ == "__main__":
    sys.exit(main())
