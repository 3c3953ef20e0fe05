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
PEERS = ("direct", "direct_tls", "v1", "stunnel", "node")


def add_ratios(what, sc, param, metric, others, lower_better=False):
    for other in others:
        r = ratio(med(sc, "csql", param, metric), med(sc, other, param, metric))
        if r is not None:
            ratios.append({"what": f"{what} csql-proxy / {other}" + (" (lower is better)" if lower_better else ""),
                           "param": param, "ratio": r})


for (sc, path, param, metric) in list(stat):
    if sc == "rate" and path == "csql":
        add_ratios("pgbench -S TPS", sc, param, metric, PEERS)
    if sc == "bulk" and path == "csql" and metric in ("MB_per_s", "proxy_cpu_s_per_GiB"):
        if metric == "MB_per_s":
            add_ratios("COPY MB/s", sc, param, metric, PEERS)
        else:
            add_ratios("proxy CPU s/GiB", sc, param, metric, ("v1", "stunnel", "node"), True)
    if sc == "connect" and path == "csql" and metric == "p50_ms":
        add_ratios("connect p50", sc, param, metric, ("direct_tls", "v1", "stunnel", "node"), True)
    if sc == "scale" and path == "csql" and metric in ("kib_per_conn", "growth_kib"):
        r = ratio(med(sc, "csql", param, metric), med(sc, "v1", param, metric))
        if r is not None and metric == "kib_per_conn":
            ratios.append({"what": "RSS per connection csql-proxy / v1 (lower is better)", "param": param,
                           "ratio": r})
    if sc == "admin" and path == "csql" and metric == "calls_per_hour":
        ratios.append({"what": "Admin API calls/hour v1 / csql-proxy", "param": param,
                       "ratio": ratio(med(sc, "v1", param, metric), med(sc, "csql", param, metric))})


def target(name, value, op, goal):
    ok = None if value is None else (value <= goal if op == "<=" else value >= goal)
    targets.append({"target": name, "goal": f"{op} {goal}", "measured": value,
                    "met": ok})


target("warm dial p50, to the database's first byte (ms)",
       med("connect", "library", "csql_dial", "warm_p50_ms"), "<=", 1.5)
target("warm dial p50, csql_dial alone: TCP + TLS (ms)",
       med("connect", "library", "csql_dial", "warm_dial_only_p50_ms"), "<=", 1.5)
target("cold start (ms), median", med("connect", "library", "csql_dial", "cold_start_ms"), "<=", 150)
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
        target(f"bulk {param} csql/v1", ratio(med(sc, "csql", param, metric), med(sc, "v1", param, metric)), ">=", 1.5)
        target(f"bulk {param} csql/direct_tls",
               ratio(med(sc, "csql", param, metric), med(sc, "direct_tls", param, metric)), ">=", 0.8)
idle = sorted((int(param.split("=")[1]), param) for (sc, path, param, metric) in stat
              if sc == "scale" and path == "csql" and metric == "kib_per_conn" and param.startswith("idle="))
if idle:
    target(f"csql-proxy idle memory per connection at {idle[-1][0]} (KiB)",
           med("scale", "csql", idle[-1][1], "kib_per_conn"), "<=", 16)
for (sc, path, param, metric) in stat:
    if sc == "scale" and path == "csql" and metric == "growth_kib":
        before = med(sc, path, param, "rss_before_kib") or 0
        # "No growth": within 1% of the process's size (or 256 KiB): allocator noise.
        target(f"csql-proxy RSS growth over {param.split('=')[1]} cycles (KiB)",
               med(sc, path, param, metric), "<=", max(256, round(before / 100)))

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


paths = ["direct", "direct_tls", "v1", "csql", "stunnel", "node"]
rate_rows = []
for f in figures:
    if f["scenario"] == "rate" and f["metric"] == "tps":
        if not rate_rows or rate_rows[-1][0] != f["param"]:
            rate_rows.append((f["param"], {}))
        rate_rows[-1][1][f["path"]] = f
plot("rate", "pgbench -S (select-only): TPS, median with min-max", "transactions/s", rate_rows, paths)
bulk_rows = []
for f in figures:
    if f["scenario"] == "bulk" and f["metric"] == "MB_per_s":
        row = next((r for r in bulk_rows if r[0] == f["param"]), None)
        if row is None:
            row = (f["param"], {})
            bulk_rows.append(row)
        row[1][f["path"]] = f
plot("bulk", "COPY TO STDOUT (out) and FROM STDIN (in), median with min-max", "MB/s", bulk_rows, paths)
scale_rows = []
for f in figures:
    if f["scenario"] == "scale" and f["metric"] == "kib_per_conn":
        row = next((r for r in scale_rows if r[0] == f["param"]), None)
        if row is None:
            row = (f["param"], {})
            scale_rows.append(row)
        row[1][f["path"]] = f
plot("scale", "proxy RSS per connection (KiB), idle and busy", "KiB per connection", scale_rows,
     ["v1", "csql"])
conn_rows = [("p50", {}), ("p99", {})]
for f in figures:
    if f["scenario"] == "connect" and f["metric"] in ("p50_ms", "p99_ms"):
        conn_rows[0 if f["metric"] == "p50_ms" else 1][1][f["path"]] = f
plot("connect", "new connection to first query answer (libpq), median with min-max", "ms",
     conn_rows if conn_rows[0][1] else [], paths)
