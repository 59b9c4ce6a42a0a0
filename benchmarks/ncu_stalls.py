"""Summarize ``ncu``'s source counters: where a kernel's warps stall, by reason, by opcode and by instruction.

One profiled kernel a CSV (``--launch-count 1``): the offsets count from the first instruction listed.

    ncu --import run.ncu-rep --page source --csv --print-source sass > run_sass.csv
    python benchmarks/ncu_stalls.py run_sass.csv [--top 60] [--ranges 0x0-0x1f00 0x1f00-0x4000]

Addresses in ``--ranges`` are offsets from the kernel's first instruction (as printed), so that the partitions of a
warp-specialized kernel (each a contiguous stretch of code) can be summed apart.
"""

import argparse
import collections
import csv


def _reasons(header):
    """The columns of stall samples per reason (all samples, not the not-issued subset), short names."""
    return {name: name.removeprefix("stall_") for name in header if name.startswith("stall_") and "(" not in name}


def read(path):
    """Rows of the CSV as (offset, sass, samples, {reason: samples}, executed)."""
    with open(path, newline="") as f:
        lines = list(csv.reader(f))
    start = next(i for i, row in enumerate(lines) if row and row[0] == "Address")
    header = lines[start]
    col = {name: i for i, name in enumerate(header)}
    reasons = _reasons(header)
    base = None
    out = []
    for row in lines[start + 1:]:
        if len(row) < len(header) or not row[0].startswith("0x"):
            continue
        address = int(row[0], 16)
        base = address if base is None else base
        counts = {short: int(row[col[name]] or 0) for name, short in reasons.items()}
        out.append((address - base, row[col["Source"]].strip(), int(row[col["Warp Stall Sampling (All Samples)"]] or 0),
                    counts, int(row[col["Instructions Executed"]] or 0)))
    return out


def _top(counts, n=4):
    total = sum(counts.values()) or 1
    ranked = sorted(counts.items(), key=lambda kv: -kv[1])[:n]
    return ", ".join(f"{name} {100 * value / total:.0f}%" for name, value in ranked if value)


def summarize(rows, title):
    total = sum(r[2] for r in rows)
    executed = sum(r[4] for r in rows)
    print(f"== {title}: {total} samples, {len(rows)} instructions, {executed} warp-instructions executed")
    reasons = collections.Counter()
    for r in rows:
        reasons.update(r[3])
    print("by reason:", _top(reasons, 12))
    opcodes = collections.defaultdict(lambda: [0, 0])
    for r in rows:
        op = r[1].split()[0] if not r[1].startswith("@") else r[1].split()[1]
        opcodes[op.split(".")[0]][0] += r[2]
        opcodes[op.split(".")[0]][1] += r[4]
    print("by opcode (samples, executed):",
          ", ".join(f"{op} {s} / {e}" for op, (s, e) in sorted(opcodes.items(), key=lambda kv: -kv[1][0])[:16]))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("csv")
    parser.add_argument("--top", type=int, default=60, help="list the instructions with the most samples")
    parser.add_argument("--ranges", nargs="*", default=[], help="offset ranges to sum apart, e.g. 0x0-0x1f00")
    args = parser.parse_args()
    rows = read(args.csv)
    summarize(rows, "whole kernel")
    for spec in args.ranges:
        lo, hi = (int(v, 16) for v in spec.split("-"))
        summarize([r for r in rows if lo <= r[0] < hi], f"offsets {spec}")
    total = sum(r[2] for r in rows) or 1
    print(f"\n== the {args.top} instructions with the most samples, in address order")
    for r in sorted(sorted(rows, key=lambda r: -r[2])[:args.top]):
        print(f"{r[0]:#07x} {100 * r[2] / total:5.1f}% exec {r[4]:>8}  {r[1][:60]:<60} {_top(r[3])}")


if __name__ == "__main__":
    main()
