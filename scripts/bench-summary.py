#!/usr/bin/env python3
"""Medians over several `tether-bench --json` runs, with ratios taken inside
each run (the machine is shared and noisy) and then their median.

usage: scripts/bench-summary.py RUN1.json RUN2.json ...  > table.md
"""
import json
import statistics
import sys

LOWER_IS_BETTER = ("RTT", "heap", "RSS", "CPU")
runs = [json.load(open(p)) for p in sys.argv[1:]]
order, values = [], {}
for run in runs:
    for row in run:
        key = (row["scenario"], row["unit"])
        if key not in values:
            order.append(key)
            values[key] = {}
        values[key].setdefault(row["implementation"], []).append(row["value"])

impls = ["tether", "tokio-tungstenite", "fastwebsockets", "raw-tcp"]
print("| scenario | unit | tether | tokio-tungstenite | fastwebsockets | raw TCP / reference | tether vs tokio-tungstenite | tether vs fastwebsockets | tether vs raw TCP |")
print("|---|---|---|---|---|---|---|---|---|")
for key in order:
    scenario, unit = key
    lower = any(w in scenario for w in LOWER_IS_BETTER)
    v = values[key]
    med = {i: statistics.median(v[i]) for i in impls if i in v}
    fmt = lambda x: "–" if x is None else (f"{x:.0f}" if x >= 100 else f"{x:.2f}")
    ratios = []
    for other in impls[1:]:
        if "tether" in v and other in v and len(v["tether"]) == len(v[other]):
            per_run = [(o / t if lower else t / o) for t, o in zip(v["tether"], v[other]) if t > 0 and o > 0]
            ratios.append(f"{statistics.median(per_run):.2f}×" if per_run else "–")
        else:
            ratios.append("–")
    print(f"| {scenario} | {unit} | " + " | ".join(fmt(med.get(i)) for i in impls) + " | " + " | ".join(ratios) + " |")
print(f"\nMedians of {len(runs)} runs; each run's value is itself the median of 5 repetitions. "
      "Ratios above 1× mean tether is better (faster, or smaller for latency and memory).")
