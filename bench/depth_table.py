#!/usr/bin/env python3
"""Markdown table of bench/depth_bench.sh samples: median (min-max, n) per depth/tool/config and the ratio of
the medians to llama.cpp's f16-KV median at the same depth.

  bench/depth_table.py samples.tsv [N_PROMPT N_GEN] [more samples.tsv ...]
Several samples files (e.g. one run per depth) may be given after the sizes; their rows are pooled.
"""
import csv
import statistics
import sys

args = sys.argv[1:]
files = [a for a in args if a.endswith(".tsv")]
sizes = [a for a in args if not a.endswith(".tsv")]
n_prompt, n_gen = (sizes + ["512", "128"])[:2] if len(sizes) >= 2 else ("512", "128")
rows = [r for f in files for r in csv.DictReader(open(f), delimiter="\t")]

keys = list(dict.fromkeys((int(r["depth"]), r["tool"], r["config"]) for r in rows))
keys.sort(key=lambda k: (k[0], k[1] != "llama.cpp"))


def cell(depth, tool, config, test):
    v = [float(r["tok_s"]) for r in rows
         if (int(r["depth"]), r["tool"], r["config"], r["test"]) == (depth, tool, config, test)]
    return (statistics.median(v), min(v), max(v), len(v)) if v else None


def fmt(c):
    return "n/a" if c is None else f"{c[0]:.1f} ({c[1]:.1f}–{c[2]:.1f}, n={c[3]})"


def ratio(c, base):
    return f"{c[0] / base[0]:.2f}×" if c and base and base[0] > 0 else "n/a"


print(f"| depth | engine | KV cache | tg{n_gen} tok/s | tg vs llama.cpp f16 | pp{n_prompt} tok/s | pp vs llama.cpp f16 |")
print("|---:|---|---|---:|---:|---:|---:|")
for depth, tool, config in keys:
    base_tg = cell(depth, "llama.cpp", "-ctk/-ctv f16", "tg")
    base_pp = cell(depth, "llama.cpp", "-ctk/-ctv f16", "pp")
    tg, pp = cell(depth, tool, config, "tg"), cell(depth, tool, config, "pp")
    print(f"| {depth} | {tool} | `{config}` | {fmt(tg)} | {ratio(tg, base_tg)} | {fmt(pp)} | {ratio(pp, base_pp)} |")
print()
print("tok/s: median of the repetitions (min–max, n = processes); ratios of the medians.")
