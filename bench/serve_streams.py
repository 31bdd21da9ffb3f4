#!/usr/bin/env python3
"""Aggregate decode speed of `kvtier serve` at 1, 2, 4 … concurrent streams (docs/server.md).

Starts the server itself (loopback, any free port), sends N greedy streamed completions at once for each N, and
prints the generated tokens per second of wall time summed over the streams, and the time to the first token.
With --peer PATH/llama-server, the same load runs against llama-server too (same model, threads, slots and
context per slot), the two servers alternating for --rounds rounds, and a last table gives the ratios of the
medians.
Usage: bench/serve_streams.py BUILD/kvtier MODEL.gguf [--streams 1,4] [--tokens 128] [-t 2]
                              [--peer PATH/llama-server] [--rounds 1]
"""
import argparse
import json
import re
import socket
import statistics
import subprocess
import threading
import time
import urllib.request


def stream_one(url, prompt, tokens, result):
    body = json.dumps({"prompt": prompt, "max_tokens": tokens, "temperature": 0, "ignore_eos": True, "stream": True,
                       "stream_options": {"include_usage": True}}).encode()
    request = urllib.request.Request(url + "/v1/completions", body, {"Content-Type": "application/json"})
    start = time.monotonic()
    first = None
    with urllib.request.urlopen(request) as response:
        for line in response:
            line = line.decode().strip()
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            event = json.loads(line[6:])
            if first is None and event["choices"] and event["choices"][0]["text"]:
                first = time.monotonic() - start
            if event["choices"] and event["choices"][0].get("text"):
                result["events"] = result.get("events", 0) + 1
            if event.get("usage"):
                result["tokens"] = event["usage"]["completion_tokens"]
    result["first_token_s"] = first


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_kvtier(args, slots):
    server = subprocess.Popen([args.binary, "serve", "-m", args.model, "--port", "0", "-np", str(slots),
                               "-c", "1024", "-t", str(args.threads)], stderr=subprocess.PIPE, text=True)
    for line in server.stderr:
        m = re.search(r"on http://127\.0\.0\.1:(\d+)", line)
        if m:
            threading.Thread(target=server.stderr.read, daemon=True).start()  # keep the pipe drained
            return server, f"http://127.0.0.1:{m.group(1)}"
    raise SystemExit("kvtier serve did not start")


def start_llama_server(args, slots):
    # llama-server splits -c over its slots: give each slot kvtier's 1024.
    port = free_port()
    server = subprocess.Popen([args.peer, "-m", args.model, "--host", "127.0.0.1", "--port", str(port), "-np",
                               str(slots), "-c", str(1024 * slots), "-t", str(args.threads), "-tb",
                               str(args.threads)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            with urllib.request.urlopen(url + "/health") as response:
                if response.status == 200:
                    return server, url
        except OSError:
            pass
        time.sleep(0.1)
    server.terminate()
    raise SystemExit("llama-server did not start")


def run_load(url, counts, tokens):
    """{streams: (tok/s over all streams, mean first-token seconds)}"""
    prompts = ["The Linux kernel", "In the beginning", "The dictionary defines", "def parse(text):"]
    stream_one(url, "Warm up", 8, {})
    rows = {}
    for n in counts:
        results = [{} for _ in range(n)]
        threads = [threading.Thread(target=stream_one, args=(url, prompts[i % len(prompts)], tokens, results[i]))
                   for i in range(n)]
        start = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        seconds = time.monotonic() - start
        generated = sum(r.get("tokens", r.get("events", 0)) for r in results)
        first = sum(r.get("first_token_s") or 0 for r in results) / n
        rows[n] = (generated / seconds, first)
        print(f"{n:>7} {generated:>7} {seconds:>8.2f} {generated / seconds:>20.1f} {first:>22.3f}", flush=True)
    return rows


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("binary")
    parser.add_argument("model")
    parser.add_argument("--streams", default="1,4")
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("-t", "--threads", type=int, default=2)
    parser.add_argument("--peer", help="llama-server binary to run the same load against")
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    counts = [int(n) for n in args.streams.split(",")]
    engines = [("kvtier", start_kvtier)] + ([("llama-server", start_llama_server)] if args.peer else [])
    results = {name: {n: [] for n in counts} for name, _ in engines}
    for round_index in range(args.rounds):
        for name, start in engines:
            server, url = start(args, max(counts))
            try:
                print(f"== {name}, round {round_index + 1}")
                print(f"{'streams':>7} {'tokens':>7} {'seconds':>8} {'tok/s (all streams)':>20} "
                      f"{'first token (s, mean)':>22}")
                for n, row in run_load(url, counts, args.tokens).items():
                    results[name][n].append(row[0])
            finally:
                server.terminate()
                server.wait()
    if args.peer:
        print("== medians (tok/s over all streams)")
        print(f"{'streams':>7} {'kvtier':>10} {'llama-server':>13} {'ratio':>7}")
        for n in counts:
            ours = statistics.median(results["kvtier"][n])
            theirs = statistics.median(results["llama-server"][n])
            print(f"{n:>7} {ours:>10.1f} {theirs:>13.1f} {ours / theirs:>7.2f}")


if __name__ == "__main__":
    main()
