#!/usr/bin/env python3
"""Where a kernel's instructions and stalls go, phase by phase.

Input: the SASS page of an ncu report with source counters, as CSV:
  ncu --set full -k regex:sweep_cmma --launch-count 1 -o prof gpu/sweep ...
  ncu -i prof.ncu-rep --page source --csv --print-source sass > sass.csv
Prints executed instructions and stall samples by opcode, then by region between
barriers (BAR.SYNC and the mbarrier wait SYNCS), which in the sweep kernels are its phases.
"""
import collections
import csv
import re
import sys

rows = list(csv.reader(open(sys.argv[1])))
hdr, data = rows[1], rows[2:]
ix = {h: i for i, h in enumerate(hdr)}
stalls = [h for h in hdr if h.startswith("stall_") and "Not Issued" not in h]
ins = []
for r in data:
    if len(r) < len(hdr):
        continue
    src = r[ix["Source"]].strip()
    executed = int(r[ix["Instructions Executed"]] or 0)
    samples = int(r[ix["Warp Stall Sampling (All Samples)"]] or 0)
    ins.append((src, executed, samples, {s: int(r[ix[s]] or 0) for s in stalls}))
total = sum(x[1] for x in ins)
total_samples = sum(x[2] for x in ins)
print("executed", total, "stall samples", total_samples, "instructions", len(ins))


def opcode(src):
    return (src.split()[1] if src.startswith("@") else src.split()[0]).split(".")[0]


by_op, by_op_samples = collections.Counter(), collections.Counter()
for src, executed, samples, _ in ins:
    by_op[opcode(src)] += executed
    by_op_samples[opcode(src)] += samples
print("opcode: executed %, stall samples %")
for op, n in by_op.most_common(30):
    print(f"{op:10s} {100 * n / total:5.1f} {100 * by_op_samples[op] / total_samples:5.1f}")

print("\nregions (split at BAR.SYNC / SYNCS)")
regions, current = [], []
for i, x in enumerate(ins):
    current.append((i, x))
    if "BAR.SYNC" in x[0] or (re.search(r"\bSYNCS\b", x[0]) and "ARRIVE" not in x[0]):
        regions.append(current)
        current = []
regions.append(current)
for region in regions:
    executed = sum(x[1] for _, x in region)
    samples = sum(x[2] for _, x in region)
    if executed == 0:
        continue
    reasons = collections.Counter()
    for _, x in region:
        reasons.update(x[3])
    top = ", ".join(
        f"{k[6:]}:{100 * v / max(samples, 1):.0f}%" for k, v in reasons.most_common(4)
    )
    hmma = sum(x[1] for _, x in region if "HMMA" in x[0])
    ops = collections.Counter()
    for _, x in region:
        ops[opcode(x[0])] += x[1]
    print(
        f"[{region[0][0]:4d}-{region[-1][0]:4d}] executed {100 * executed / total:5.1f}%"
        f" samples {100 * samples / total_samples:5.1f}% hmma {hmma}  {top}"
    )
    print("    ", ", ".join(f"{k} {100 * v / executed:.0f}%" for k, v in ops.most_common(6)))
