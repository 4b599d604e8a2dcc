#!/usr/bin/env python3
"""Bar charts of requests/s and p99 per system from compare.sh's results.tsv.

usage: plot.py results.tsv out.png
"""
import csv
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main():
    rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
    names = [r["system"] for r in rows]
    rps = [float(r["rps"]) for r in rows]
    p99 = [float(r["p99_ms"]) for r in rows]
    fig, (a, b) = plt.subplots(1, 2, figsize=(13, 5))
    a.barh(names, rps, color="#4c72b0")
    a.set_xlabel("requests/s (median of rounds, higher is better)")
    a.invert_yaxis()
    b.barh(names, p99, color="#dd8452")
    b.set_xlabel("p99 latency, ms (median of rounds, lower is better)")
    b.invert_yaxis()
    b.set_yticklabels([])
    fig.suptitle("1 core per system under test, 64 keep-alive connections (wrk)")
    fig.tight_layout()
    fig.savefig(sys.argv[2], dpi=110)


if __name__ == "__main__":
    main()
