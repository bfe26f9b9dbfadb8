#!/usr/bin/python3
"""Turns the raw files a bench/*.sh script left in its work directory into the
printed table and the saved JSON (bench/results/<name>-<timestamp>.json).

    report.py <benchmark> <work dir> <json out> [options]

Standard library only: the scripts run it with /usr/bin/python3.
"""
import argparse
import glob
import json
import os
import re
import statistics
import sys

# ---------------------------------------------------------------------------
# helpers


def load_json(path):
    with open(path) as f:
        return json.load(f)


def wrk_result(path):
    """The WRK_JSON line printed by bench/wrk/post.lua's done()."""
    with open(path) as f:
        text = f.read()
    m = re.search(r"^WRK_JSON (\{.*\})$", text, re.M)
    if not m:
        sys.exit(f"report.py: no WRK_JSON line in {path}:\n{text}")
    r = json.loads(m.group(1))
    r["errors_total"] = sum(r["errors"].values())
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    r["non_2xx"] = int(m.group(1)) if m else 0
    return r


def stat_fields(model_stats):
    s = model_stats["inference_stats"]
    out = {k: dict(s[k]) for k in ("success", "fail", "queue", "compute_input", "compute_infer", "compute_output")}
    out["inference_count"] = model_stats.get("inference_count", 0)
    out["execution_count"] = model_stats.get("execution_count", 0)
    out["batch_stats"] = {
        int(b["batch_size"]): {k: dict(b[k]) for k in ("compute_input", "compute_infer", "compute_output")}
        for b in model_stats.get("batch_stats", [])
    }
    return out


def model_stats(path, model=None):
    doc = load_json(path)
    for m in doc["model_stats"]:
        if model is None or m["name"] == model:
            return stat_fields(m)
    sys.exit(f"report.py: model {model} not in {path}")


def stats_delta(before, after):
    d = {}
    for k in ("success", "fail", "queue", "compute_input", "compute_infer", "compute_output"):
        d[k] = {f: after[k][f] - before[k][f] for f in ("count", "ns")}
    d["inference_count"] = after["inference_count"] - before["inference_count"]
    d["execution_count"] = after["execution_count"] - before["execution_count"]
    d["batch_stats"] = {}
    for size, b in after["batch_stats"].items():
        prev = before["batch_stats"].get(size)
        cnt = b["compute_infer"]["count"] - (prev["compute_infer"]["count"] if prev else 0)
        ns = b["compute_infer"]["ns"] - (prev["compute_infer"]["ns"] if prev else 0)
        if cnt:
            d["batch_stats"][size] = {"count": cnt, "compute_infer_ns": ns}
    return d


def per(ns, count):
    return ns / count / 1000.0 if count else float("nan")


def table(headers, rows, aligns=None):
    """Fixed-width table: first column left-aligned, the rest right-aligned."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    aligns = aligns or ["<"] + [">"] * (len(headers) - 1)
    lines = []
    for n, r in enumerate(cells):
        lines.append("  ".join(f"{c:{a}{w}}" for c, a, w in zip(r, aligns, widths)).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    print("\n".join(lines))


def f0(x):
    return "n/a" if x != x else f"{x:,.0f}"


def f1(x):
    return "n/a" if x != x else f"{x:,.1f}"


def f2(x):
    return "n/a" if x != x else f"{x:.2f}"


def save(path, work, payload):
    meta = load_json(os.path.join(work, "meta.json"))
    meta.update(payload)
    with open(path, "w") as f:
        json.dump(meta, f, indent=2, sort_keys=True)
        f.write("\n")


# ---------------------------------------------------------------------------
# http_infer


def summary_p50(path):
    """The 0.5 quantiles of the nv_inference_*_summary_us families in a
    metrics scrape (µs), keyed by phase; empty when summaries are off."""
    out = {}
    if not os.path.exists(path):
        return out
    pat = re.compile(r'^nv_inference_(request|queue|compute_infer)_summary_us\{[^}]*quantile="0\.5"[^}]*\} (\S+)$')
    for line in open(path):
        m = pat.match(line.strip())
        if m and m.group(2) != "NaN":
            out[m.group(1)] = float(m.group(2))
    return out


def http_infer(a):
    concs = [int(c) for c in a.concurrencies.split()]
    tck = a.clk_tck
    rows, over_rows, points = [], [], []
    c1 = None

    def cpu_per_req(side, c, r, requests):
        b = int(open(os.path.join(a.work, f"{side}-c{c}-r{r}.cpu-before")).read())
        e = int(open(os.path.join(a.work, f"{side}-c{c}-r{r}.cpu-after")).read())
        return (e - b) / tck * 1e6 / requests if requests else float("nan")

    def median_run(runs):
        return sorted(runs, key=lambda x: x["rps"])[(len(runs) - 1) // 2]

    for c in concs:
        runs = {"imagen": [], "nginx": []}
        for r in range(1, a.repeat + 1):
            for side in runs:
                w = wrk_result(os.path.join(a.work, f"{side}-c{c}-r{r}.wrk"))
                w["run"] = r
                w["cpu_us_per_request"] = cpu_per_req(side, c, r, w["requests"])
                if side == "imagen":
                    w["summary_p50_us"] = summary_p50(os.path.join(a.work, f"imagen-c{c}-r{r}.metrics-after"))
                    w["stats_delta"] = stats_delta(
                        model_stats(os.path.join(a.work, f"imagen-c{c}-r{r}.stats-before")),
                        model_stats(os.path.join(a.work, f"imagen-c{c}-r{r}.stats-after")))
                runs[side].append(w)
        im, ng = median_run(runs["imagen"]), median_run(runs["nginx"])
        # statistics summed over every run at this concurrency
        n = sum(w["stats_delta"]["success"]["count"] for w in runs["imagen"])
        succ = sum(w["stats_delta"]["success"]["ns"] for w in runs["imagen"])
        inf = sum(w["stats_delta"]["compute_infer"]["ns"] for w in runs["imagen"])
        que = sum(w["stats_delta"]["queue"]["ns"] for w in runs["imagen"])
        e2e, infer, queue, overhead = per(succ, n), per(inf, n), per(que, n), per(succ - inf, n)
        ratio = im["rps"] / ng["rps"] if ng["rps"] else float("nan")
        err = {s: (sum(w["errors_total"] for w in v), sum(w["requests"] for w in v)) for s, v in runs.items()}
        row = [c, f0(im["rps"]), f0(ng["rps"]), f"{ratio * 100:.0f}%"]
        if a.repeat > 1:
            rng = lambda v: f"{min(w['rps'] for w in v) / 1000:.1f}-{max(w['rps'] for w in v) / 1000:.1f}k"
            row += [rng(runs["imagen"]), rng(runs["nginx"])]
        row += [im["p50_us"], ng["p50_us"], im["p99_us"], ng["p99_us"],
                f"{err['imagen'][0]}/{err['imagen'][1]}", f"{err['nginx'][0]}/{err['nginx'][1]}",
                f1(statistics.median(w["cpu_us_per_request"] for w in runs["imagen"])),
                f1(statistics.median(w["cpu_us_per_request"] for w in runs["nginx"]))]
        rows.append(row)
        p50 = im.get("summary_p50_us") or {}
        p50_overhead = (p50["request"] - p50["compute_infer"]) if {"request", "compute_infer"} <= p50.keys() \
            else float("nan")
        over_rows.append([c, f"{n:,}", f1(e2e), f1(queue), f2(infer), f1(overhead),
                          f1(p50.get("request", float("nan"))), f1(p50.get("queue", float("nan"))),
                          f1(p50_overhead), "25-40", "20"])
        points.append({"concurrency": c, "runs": runs, "median_imagen_run": im["run"], "median_nginx_run": ng["run"],
                       "ratio_rps": ratio, "server_overhead_mean_us": overhead, "e2e_mean_us": e2e,
                       "queue_mean_us": queue, "compute_infer_mean_us": infer,
                       "summary_p50_us": p50, "server_overhead_p50_us": p50_overhead})
        if c == 1:
            c1 = (im, infer, ng)

    hdr = ["conc", "imagen req/s", "nginx req/s", "imagen/nginx"]
    if a.repeat > 1:
        hdr += ["imagen range", "nginx range"]
    hdr += ["imagen p50", "nginx p50", "imagen p99", "nginx p99", "imagen err/req", "nginx err/req",
            "imagen CPU µs/req", "nginx CPU µs/req"]
    what = f"median-rate run of {a.repeat}; " if a.repeat > 1 else ""
    print(f"Throughput and client latency (wrk, keep-alive; {what}latency in µs; err = socket errors + non-2xx;"
          f" CPU = server utime+stime per request)")
    table(hdr, rows)
    print()
    print("Server overhead from GET /v2/models/<m>/stats (delta over the measured runs; µs per request)")
    table(["conc", "requests", "e2e mean", "queue mean", "infer mean", "overhead mean", "e2e p50", "queue p50",
           "overhead p50", "Triton", "target"], over_rows)
    print("  overhead mean = (success.ns - compute_infer.ns) / success.count; it includes queue time,")
    print("  which grows with concurrency because the model has one instance.")
    print("  p50 columns: nv_inference_request/queue/compute_infer_summary_us quantile 0.5 read after the")
    print("  median-rate run (a window of the last minute); overhead p50 = request p50 - compute_infer p50.")
    client_p50_overhead = above_nginx = None
    if c1:
        im, infer, ng = c1
        client_p50_overhead = im["p50_us"] - infer
        print(f"  p50 overhead (client-side, c=1) = wrk p50 {im['p50_us']} µs - compute_infer mean {infer:.2f} µs"
              f" = {client_p50_overhead:.1f} µs  (Triton published 25-40 µs; target 20 µs)")
        above_nginx = im["p50_us"] - ng["p50_us"]
        print(f"  p50 above nginx (c=1) = {im['p50_us']} - {ng['p50_us']} = {im['p50_us'] - ng['p50_us']} µs"
              f" (the same client and loopback round trip, minus a server that does no work)")
    first = points[0]
    if first["concurrency"] == 1 and first["server_overhead_p50_us"] == first["server_overhead_p50_us"]:
        v = first["server_overhead_p50_us"]
        print(f"  target: server overhead <= 20 µs at p50 (c=1, from the summaries): {v:.1f} µs -> "
              f"{'met' if v <= 20 else 'missed'}")
    last = points[-1]
    verdict = "met" if last["ratio_rps"] >= 0.5 else "missed"
    print(f"  target: >= 50% of nginx's rate at c={last['concurrency']}: "
          f"{last['ratio_rps'] * 100:.0f}% -> {verdict}")
    save(a.json, a.work, {"http_thread_count": a.http_threads, "repeat": a.repeat, "points": points,
                          "client_p50_overhead_c1_us": client_p50_overhead, "p50_above_nginx_c1_us": above_nginx,
                          "target_ratio_c64": 0.5, "target_ratio_met": last["ratio_rps"] >= 0.5})


# ---------------------------------------------------------------------------
# batching


def batching(a):
    rows, hist_rows, raw = [], [], {}
    res = {}
    for label, model in (("without dynamic_batching", a.single), ("dynamic_batching { }", a.dyn)):
        r = wrk_result(os.path.join(a.work, f"{model}.wrk"))
        d = stats_delta(model_stats(os.path.join(a.work, f"{model}.stats-before"), model),
                        model_stats(os.path.join(a.work, f"{model}.stats-after"), model))
        execs = d["execution_count"]
        mean_batch = d["inference_count"] / execs if execs else float("nan")
        res[model] = r
        rows.append([label, f0(r["rps"]), r["p50_us"], r["p99_us"], f"{r['errors_total']}/{r['requests']}",
                     f"{execs:,}", f2(mean_batch), f1(per(d["queue"]["ns"], d["success"]["count"]))])
        raw[model] = {"wrk": r, "stats_delta": d, "mean_batch_size": mean_batch}
        for size in sorted(d["batch_stats"]):
            b = d["batch_stats"][size]
            share = b["count"] / execs * 100 if execs else float("nan")
            hist_rows.append([label, size, f"{b['count']:,}", f"{share:.1f}%",
                              f1(b["compute_infer_ns"] / b["count"] / 1000.0)])
    ratio = res[a.dyn]["rps"] / res[a.single]["rps"] if res[a.single]["rps"] else float("nan")
    print(f"timed model (fixed_us {a.fixed_us}, per_item_us {a.per_item_us}, max_batch_size 8, 1 CPU instance),"
          f" wrk c={a.concurrency}, latency in µs")
    table(["scheduler", "req/s", "p50", "p99", "err/req", "executions", "mean batch", "queue mean"], rows)
    print()
    print("Batch sizes executed (batch_stats delta over the measured run)")
    table(["scheduler", "batch size", "executions", "share", "compute_infer µs/exec"], hist_rows)
    print()
    single_cap = 1e6 / (a.fixed_us + a.per_item_us)
    batch_cap = 8 * 1e6 / (a.fixed_us + 8 * a.per_item_us)
    print(f"  ratio dynamic/none = {ratio:.2f}x  (target >= 3x: {'met' if ratio >= 3 else 'missed'})")
    print(f"  ceilings for one instance: {single_cap:.0f} req/s unbatched, {batch_cap:.0f} req/s at batch 8"
          f" ({batch_cap / single_cap:.2f}x)")
    save(a.json, a.work, {"concurrency": a.concurrency, "fixed_us": a.fixed_us, "per_item_us": a.per_item_us,
                          "models": raw, "ratio": ratio, "target_ratio": 3, "target_met": ratio >= 3,
                          "ceiling_unbatched_rps": single_cap, "ceiling_batch8_rps": batch_cap})


# ---------------------------------------------------------------------------
# startup


def read_us(path):
    with open(path) as f:
        return [int(x) for x in f.read().split()]


def startup(a):
    ready = read_us(os.path.join(a.work, "ready.us"))
    polls = read_us(os.path.join(a.work, "polls.count"))
    ready_tcp = read_us(os.path.join(a.work, "ready-tcp.us"))
    polls_tcp = read_us(os.path.join(a.work, "polls-tcp.count"))
    stop = read_us(os.path.join(a.work, "stop.us"))
    floor = read_us(os.path.join(a.work, "true.us"))
    curl = read_us(os.path.join(a.work, "curl.us"))
    version = read_us(os.path.join(a.work, "version.us"))

    def row(name, xs):
        xs = sorted(xs)
        return [name, len(xs), f2(statistics.median(xs) / 1000), f2(xs[0] / 1000), f2(xs[-1] / 1000)]

    print(f"exec -> first 200 from /v2/health/ready, {a.models} identity models (ms, from just before exec"
          f" to the end of the first poll answered 200)")
    rows = [row("ready, curl poll", ready), row("ready, bash /dev/tcp poll", ready_tcp),
            row("floor: exec /bin/true", floor), row("exec imagen-server --version", version),
            row("one curl of ready endpoint", curl),
            row("SIGTERM -> exit (idle)", stop)]
    table(["measure", "runs", "median", "min", "max"], rows)
    med = {k: statistics.median(v) for k, v in
           (("ready", ready), ("tcp", ready_tcp), ("floor", floor), ("curl", curl))}
    print(f"  polls per start-up: curl median {statistics.median(polls):.0f} (max {max(polls)}),"
          f" /dev/tcp median {statistics.median(polls_tcp):.0f} (max {max(polls_tcp)})")
    print(f"  ratio ready/floor = {med['ready'] / med['floor']:.1f}x with curl,"
          f" {med['tcp'] / med['floor']:.1f}x with /dev/tcp")
    # Where the time goes, from the server log's timestamps (/dev/tcp runs)
    phases = {"exec -> first log line": [], "first log line -> HTTP listening": [],
              "HTTP listening -> 200 seen by the poller": []}
    import datetime
    for line in open(os.path.join(a.work, "tcp-runs.txt")):
        t0, t1, log = line.split()
        stamps = {}
        for l in open(log):
            m = re.match(r"\S+ (\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+)Z (\w+): (.*)", l)
            if not m:
                continue
            dt = datetime.datetime.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S.%f").replace(tzinfo=datetime.timezone.utc)
            us = int(dt.timestamp() * 1e6)
            stamps.setdefault("first", us)
            if "Started HTTPService" in m.group(3):
                stamps["http"] = us
        if "first" in stamps and "http" in stamps:
            phases["exec -> first log line"].append(stamps["first"] - int(t0))
            phases["first log line -> HTTP listening"].append(stamps["http"] - stamps["first"])
            phases["HTTP listening -> 200 seen by the poller"].append(int(t1) - stamps["http"])
    if all(phases.values()):
        print()
        print("Where the start-up goes (median ms over the /dev/tcp runs, from the server log's µs timestamps)")
        table(["phase", "median", "min", "max"],
              [[k, f2(statistics.median(v) / 1000), f2(min(v) / 1000), f2(max(v) / 1000)] for k, v in phases.items()])
    hyper = None
    hp = os.path.join(a.work, "hyperfine-true.json")
    if os.path.exists(hp):
        hyper = load_json(hp)["results"][0]
        print(f"  cross-check: hyperfine -N /bin/true median {hyper['median'] * 1000:.2f} ms"
              f" over {len(hyper['times'])} runs")
    save(a.json, a.work, {"models": a.models, "ready_curl_us": ready, "polls_curl": polls,
                          "ready_devtcp_us": ready_tcp, "polls_devtcp": polls_tcp, "stop_us": stop,
                          "true_us": floor, "version_us": version, "curl_us": curl,
                          "median_ready_curl_ms": med["ready"] / 1000, "median_ready_devtcp_ms": med["tcp"] / 1000,
                          "median_true_ms": med["floor"] / 1000, "median_curl_ms": med["curl"] / 1000,
                          "hyperfine_true": hyper, "phases_us": phases})


# ---------------------------------------------------------------------------
# memory


def h2load_result(path):
    with open(path) as f:
        text = f.read()
    out = {"text_tail": text[-2000:]}
    m = re.search(r"finished in ([\d.]+)(m?s), ([\d.]+) req/s", text)
    if m:
        secs = float(m.group(1)) / (1000 if m.group(2) == "ms" else 1)
        out.update(seconds=secs, rps=float(m.group(3)))
    m = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, "
                  r"(\d+) errored, (\d+) timeout", text)
    if m:
        keys = ("total", "started", "done", "succeeded", "failed", "errored", "timeout")
        out.update({k: int(v) for k, v in zip(keys, m.groups())})
    m = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", text)
    if m:
        out["status"] = dict(zip(("2xx", "3xx", "4xx", "5xx"), map(int, m.groups())))
    return out


def memory(a):
    mem = load_json(os.path.join(a.work, "memory.json"))
    kib = lambda x: f"{x / 1024:.2f}"  # KiB -> MiB
    idle = mem["idle_rss_kib"]
    print(f"Resident set size of imagen-server (VmRSS, MiB); {a.models} identity models; load: {mem['load_tool']},"
          f" c={a.concurrency}, keep-alive, JSON INT32[1,16] infer")
    inuse = lambda b: "n/a" if b is None or b < 0 else f"{b / 1048576:.3f}"
    rows = [["idle after start-up", "", kib(idle), kib(mem["idle_hwm_kib"]), kib(mem["idle_anon_kib"]),
             inuse(mem.get("idle_malloc_in_use")), "", "", "20.00", ""]]
    rounds = []
    prev = idle
    for i, r in enumerate(mem["rounds"], 1):
        load = h2load_result(r["load_file"]) if mem["load_tool"] == "h2load" else r.get("wrk", {})
        ok = load.get("succeeded", load.get("requests"))
        bad = (load.get("failed", 0) + load.get("errored", 0) + load.get("timeout", 0)
               if mem["load_tool"] == "h2load" else load.get("errors_total", 0))
        growth = (r["rss_kib"] - idle) / idle * 100
        rows.append([f"after {r['requests_cum']:,} requests", f"{ok:,} ok / {bad:,} failed",
                     kib(r["rss_kib"]), kib(r["hwm_kib"]), kib(r["anon_kib"]), inuse(r.get("malloc_in_use")),
                     f"{(r['rss_kib'] - prev) / 1024:+.2f}",
                     f"{growth:+.1f}%", "", "<= +5%"])
        prev = r["rss_kib"]
        rounds.append({**r, "load": load, "growth_vs_idle_pct": growth})
    if mem.get("trim_rss_kib", -1) >= 0:
        rows.append(["then malloc_trim(0)", "", kib(mem["trim_rss_kib"]), "", "", inuse(mem.get("trim_malloc_in_use")),
                     f"{(mem['trim_rss_kib'] - prev) / 1024:+.2f}", f"{(mem['trim_rss_kib'] - idle) / idle * 100:+.1f}%",
                     "", ""])
    table(["state", "requests", "VmRSS", "VmHWM", "RssAnon", "malloc live", "delta", "vs idle", "target MiB",
           "target growth"], rows)
    print("  VmHWM = peak RSS so far (during the load); RssAnon = heap and anonymous mappings;")
    print("  malloc live = glibc malloc_stats() 'in use bytes' (MiB), read through gdb")
    first = rounds[0]
    print(f"  idle target <= 20 MiB: {kib(idle)} MiB -> {'met' if idle <= 20 * 1024 else 'missed'};"
          f" growth after {first['requests_cum']:,} requests: {first['growth_vs_idle_pct']:+.1f}%"
          f" -> {'met' if first['growth_vs_idle_pct'] <= 5 else 'missed'}")
    if rounds and rounds[0].get("load", {}).get("rps"):
        print("  load rate: " + ", ".join(f"round {i}: {r['load']['rps']:,.0f} req/s"
                                          for i, r in enumerate(rounds, 1) if r["load"].get("rps")))
    print()
    fl = mem["inflight"]
    n = fl["n"]
    payload = fl["payload_bytes"]
    held = fl["inflight_rss_kib"] - fl["idle_rss_kib"]
    per_req = held * 1024 / n
    print(f"In-flight cost: {n} requests of {payload / 1048576:.2f} MiB binary FP32 input each, held by a `timed` model"
          f" (1 instance, fixed_us {fl['fixed_us']}, no batching; 1 executing + {n - 1} queued)")
    table(["state", "VmRSS MiB", "pending (metrics)"],
          [["idle (same server)", kib(fl["idle_rss_kib"]), "0"],
           [f"{n} in flight", kib(fl["inflight_rss_kib"]), str(fl.get("pending", "n/a"))]])
    print(f"  per in-flight request = ({kib(fl['inflight_rss_kib'])} - {kib(fl['idle_rss_kib'])}) MiB / {n}"
          f" = {per_req / 1048576:.3f} MiB = {per_req / payload:.2f}x the {payload / 1048576:.2f} MiB payload")
    save(a.json, a.work, {"models": a.models, "concurrency": a.concurrency, "memory": mem, "rounds": rounds,
                          "inflight_per_request_bytes": per_req, "inflight_per_request_vs_payload": per_req / payload,
                          "idle_target_met": idle <= 20 * 1024,
                          "growth_target_met": rounds[0]["growth_vs_idle_pct"] <= 5 if rounds else None})


# ---------------------------------------------------------------------------


def main():
    p = argparse.ArgumentParser()
    p.add_argument("bench", choices=["http_infer", "batching", "startup", "memory"])
    p.add_argument("work")
    p.add_argument("json")
    p.add_argument("--concurrencies", default="1 16 64")
    p.add_argument("--http-threads", type=int, default=0)
    p.add_argument("--repeat", type=int, default=1)
    p.add_argument("--clk-tck", type=int, default=100)
    p.add_argument("--single", default="timed_plain")
    p.add_argument("--dyn", default="timed_dynamic")
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--fixed-us", type=int, default=2000)
    p.add_argument("--per-item-us", type=int, default=250)
    p.add_argument("--models", type=int, default=10)
    a = p.parse_args()
    {"http_infer": http_infer, "batching": batching, "startup": startup, "memory": memory}[a.bench](a)


if __name__ == "__main__":
    main()
