#!/usr/bin/env python3
"""bench/run.sh's report: raw measurements (JSON lines) -> results.json + results.md.

usage: report.py RAW.jsonl OUTDIR MODE REPS SECS NPROC LOADAVG
Each figure: median, min, max over the repetitions. Ratios are of medians measured in
the same run (paths interleaved within each repetition).
"""
import json
import platform
import statistics
import sys
import time
from collections import OrderedDict

raw, outdir, mode, reps, secs, nproc, loadavg = sys.argv[1:8]
groups = OrderedDict()
for line in open(raw):
    r = json.loads(line)
    groups.setdefault((r["scenario"], r["path"], r["param"], r["metric"]), []).append(r["value"])

figures = []
stat = {}
for (sc, path, param, metric), vals in groups.items():
    f = {"scenario": sc, "path": path, "param": param, "metric": metric,
         "median": statistics.median(vals), "min": min(vals), "max": max(vals), "n": len(vals)}
    figures.append(f)
    stat[(sc, path, param, metric)] = f


def med(sc, path, param, metric):
    f = stat.get((sc, path, param, metric))
    return f["median"] if f else None


def ratio(a, b):
    return round(a / b, 3) if a is not None and b else None


ratios = []
targets = []
for (sc, path, param, metric) in list(stat):
    if sc == "rate" and path == "csql":
        for other in ("direct", "direct_tls", "v1"):
            ratios.append({"what": f"pgbench -S TPS csql-proxy / {other}", "param": param,
                           "ratio": ratio(med(sc, "csql", param, metric), med(sc, other, param, metric))})
    if sc == "bulk" and path == "csql" and metric == "MB_per_s":
        for other in ("direct", "direct_tls", "v1"):
            ratios.append({"what": f"COPY MB/s csql-proxy / {other}", "param": param,
                           "ratio": ratio(med(sc, "csql", param, metric), med(sc, other, param, metric))})
    if sc == "connect" and path == "csql" and metric == "p50_ms":
        for other in ("direct_tls", "v1"):
            ratios.append({"what": f"connect p50 csql-proxy / {other} (lower is better)", "param": param,
                           "ratio": ratio(med(sc, "csql", param, metric), med(sc, other, param, metric))})
    if sc == "admin" and path == "csql" and metric == "calls_per_hour":
        ratios.append({"what": "Admin API calls/hour v1 / csql-proxy", "param": param,
                       "ratio": ratio(med(sc, "v1", param, metric), med(sc, "csql", param, metric))})


def target(name, value, op, goal):
    ok = None if value is None else (value <= goal if op == "<=" else value >= goal)
    targets.append({"target": name, "goal": f"{op} {goal}", "measured": value,
                    "met": ok})


target("warm dial p50 (ms)", med("connect", "library", "csql_dial", "warm_p50_ms"), "<=", 1.5)
target("cold start (ms)", med("connect", "library", "csql_dial", "cold_start_ms"), "<=", 150)
top = None
for (sc, path, param, metric) in stat:
    if sc == "rate":
        n = int(param.split("=")[1])
        top = n if top is None or n > top else top
if top is not None:
    p = f"clients={top}"
    target(f"pgbench -S csql/direct_tls at {top} clients",
           ratio(med("rate", "csql", p, "tps"), med("rate", "direct_tls", p, "tps")), ">=", 0.9)
    target(f"pgbench -S csql/v1 at {top} clients",
           ratio(med("rate", "csql", p, "tps"), med("rate", "v1", p, "tps")), ">=", 1.3)
for (sc, path, param, metric) in stat:
    if sc == "bulk" and path == "csql" and metric == "MB_per_s":
        target("bulk csql/v1", ratio(med(sc, "csql", param, metric), med(sc, "v1", param, metric)), ">=", 1.5)
        target("bulk csql/direct_tls",
               ratio(med(sc, "csql", param, metric), med(sc, "direct_tls", param, metric)), ">=", 0.8)

meta = {"mode": mode, "repetitions": int(reps), "seconds_per_run": int(secs), "cpus": int(nproc),
        "loadavg_at_end": loadavg, "host": platform.node(), "kernel": platform.release(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
json.dump({"meta": meta, "figures": figures, "ratios": ratios, "targets": targets},
          open(f"{outdir}/results.json", "w"), indent=1)


def fmt(v):
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:.3f}" if abs(v) < 10 else f"{v:.1f}"
    return str(v)


lines = [f"Run {meta['time']}, mode {mode}, {reps} repetitions x {secs} s, {nproc} CPUs, "
         f"load average at end {loadavg}.", "",
         "| scenario | parameter | metric | path | median | min | max |",
         "|---|---|---|---|---:|---:|---:|"]
for f in figures:
    lines.append(f"| {f['scenario']} | {f['param']} | {f['metric']} | {f['path']} | "
                 f"{fmt(f['median'])} | {fmt(f['min'])} | {fmt(f['max'])} |")
lines += ["", "| ratio (of medians, same run) | parameter | value |", "|---|---|---:|"]
for r in ratios:
    lines.append(f"| {r['what']} | {r['param']} | {fmt(r['ratio'])} |")
lines += ["", "| target (a goal, not a test) | goal | measured | met |", "|---|---|---:|---|"]
for t in targets:
    met = "n/a" if t["met"] is None else ("yes" if t["met"] else "**no**")
    lines.append(f"| {t['target']} | {t['goal']} | {fmt(t['measured'])} | {met} |")
open(f"{outdir}/results.md", "w").write("\n".join(lines) + "\n")


# PNG plots when gnuplot is there (scripts/setup.sh installs gnuplot-nox).
def plot(name, title, ylabel, rows, paths):
    """rows: [(label, {path: figure})]; a clustered histogram with min/max error bars."""
    import os
    import shutil
    import subprocess
    import tempfile
    if not shutil.which("gnuplot") or not rows:
        return
    with tempfile.NamedTemporaryFile("w", suffix=".dat", delete=False) as d:
        for label, by in rows:
            cols = []
            for p in paths:
                f = by.get(p)
                cols += [f["median"], f["min"], f["max"]] if f else [0, 0, 0]
            d.write(f'"{label}" ' + " ".join(str(c) for c in cols) + "\n")
    series = ", ".join(
        f"'{d.name}' using {2 + 3 * i}:{3 + 3 * i}:{4 + 3 * i}:xtic(1) title '{p}'"
        for i, p in enumerate(paths))
    script = (f"set terminal pngcairo size 800,450 noenhanced\nset output '{outdir}/{name}.png'\n"
              f"set title '{title}'\nset ylabel '{ylabel}'\nset style data histogram\n"
              "set style histogram errorbars gap 2 lw 1\nset style fill solid 0.6 border -1\n"
              "set yrange [0:*]\nset key outside right top\nset grid ytics\n"
              f"plot {series}\n")
    try:
        subprocess.run(["gnuplot"], input=script, text=True, check=True, timeout=30)
    finally:
        os.unlink(d.name)


paths = ["direct", "direct_tls", "v1", "csql"]
rate_rows = []
for f in figures:
    if f["scenario"] == "rate" and f["metric"] == "tps":
        if not rate_rows or rate_rows[-1][0] != f["param"]:
            rate_rows.append((f["param"], {}))
        rate_rows[-1][1][f["path"]] = f
plot("rate", "pgbench -S (select-only): TPS, median with min-max", "transactions/s", rate_rows, paths)
bulk_rows = [(f["param"], {}) for f in figures if f["scenario"] == "bulk" and f["path"] == "direct"
             and f["metric"] == "MB_per_s"]
for f in figures:
    if f["scenario"] == "bulk" and f["metric"] == "MB_per_s" and bulk_rows:
        bulk_rows[0][1][f["path"]] = f
plot("bulk", "COPY TO STDOUT throughput, median with min-max", "MB/s", bulk_rows, paths)
conn_rows = [("p50", {}), ("p99", {})]
for f in figures:
    if f["scenario"] == "connect" and f["metric"] in ("p50_ms", "p99_ms"):
        conn_rows[0 if f["metric"] == "p50_ms" else 1][1][f["path"]] = f
plot("connect", "new connection to first query answer (libpq), median with min-max", "ms",
     conn_rows if conn_rows[0][1] else [], paths)
