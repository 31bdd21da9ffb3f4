#!/usr/bin/env python3
"""Aggregate decode speed of `kvtier serve` at 1, 2, 4 … concurrent streams (docs/server.md).

Starts the server itself (loopback, any free port), sends N greedy streamed completions at once for each N, and
prints the generated tokens per second of wall time summed over the streams, and the time to the first token.
Usage: bench/serve_streams.py BUILD/kvtier MODEL.gguf [--streams 1,4] [--tokens 128] [-t 2]
"""
import argparse
import json
import re
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
            if event.get("usage"):
                result["tokens"] = event["usage"]["completion_tokens"]
    result["first_token_s"] = first


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("binary")
    parser.add_argument("model")
    parser.add_argument("--streams", default="1,4")
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("-t", "--threads", type=int, default=2)
    args = parser.parse_args()
    counts = [int(n) for n in args.streams.split(",")]
    server = subprocess.Popen([args.binary, "serve", "-m", args.model, "--port", "0", "-np", str(max(counts)),
                               "-c", "1024", "-t", str(args.threads)], stderr=subprocess.PIPE, text=True)
    try:
        port = None
        for line in server.stderr:
            m = re.search(r"on http://127\.0\.0\.1:(\d+)", line)
            if m:
                port = int(m.group(1))
                break
        if port is None:
            raise SystemExit("the server did not start")
        url = f"http://127.0.0.1:{port}"
        prompts = ["The Linux kernel", "In the beginning", "The dictionary defines", "def parse(text):"]
        stream_one(url, "Warm up", 8, {})
        print(f"{'streams':>7} {'tokens':>7} {'seconds':>8} {'tok/s (all streams)':>20} {'first token (s, mean)':>22}")
        for n in counts:
            results = [{} for _ in range(n)]
            threads = [threading.Thread(target=stream_one, args=(url, prompts[i % len(prompts)], args.tokens,
                                                                 results[i])) for i in range(n)]
            start = time.monotonic()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            seconds = time.monotonic() - start
            tokens = sum(r.get("tokens", 0) for r in results)
            first = sum(r.get("first_token_s") or 0 for r in results) / n
            print(f"{n:>7} {tokens:>7} {seconds:>8.2f} {tokens / seconds:>20.1f} {first:>22.3f}")
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    main()
