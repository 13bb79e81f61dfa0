#!/usr/bin/env python3
"""Charts from ringws-loadgen output: PNG files, one per chart.

    python3 scripts/plot.py REPORT.json [REPORT.json ...] [--hist-log FILE ...] [--bench RESULTS.json] [-o DIR]

- REPORT.json (from `ringws-loadgen ... --json FILE`): throughput and p50/p99 latency over time
  (`<name>-timeline.png`), and the final percentiles (`<name>-percentiles.png`).
- --hist-log FILE (from `--hist-log`): the latency percentile spectrum of the whole run, from the
  HdrHistogram interval log (`<name>-spectrum.png`), and p50/p99/max per interval (`<name>-intervals.png`).
- --spectrum-chart NAME with --hist-log FILE ...: instead of a chart per file, the percentile spectra of
  every file on one chart (`NAME.png`, title from --title), one line per run name; files whose names differ
  only in a `-rN` suffix (rounds of one run, as scripts/latency.sh writes them) are merged into one line.
- --bench RESULTS.json (from `scripts/bench.sh`): msgs/s and server CPU per message by scenario and server
  (`bench-throughput.png`, `bench-cpu.png`).

Installs what it needs (matplotlib, hdrhistogram) into scripts/.venv on first use.
"""

import argparse
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
VENV = os.path.join(HERE, ".venv")
VENV_PYTHON = os.path.join(VENV, "bin", "python3")


def ensure_dependencies():
    try:
        import matplotlib  # noqa: F401
        import hdrh  # noqa: F401
        return
    except ImportError:
        pass
    if os.path.realpath(sys.prefix) == os.path.realpath(VENV):
        sys.exit("plot.py: matplotlib/hdrhistogram missing from scripts/.venv; delete it and rerun")
    if not os.path.exists(VENV_PYTHON):
        print("plot.py: creating scripts/.venv (matplotlib, hdrhistogram)", file=sys.stderr)
        subprocess.check_call([sys.executable, "-m", "venv", VENV])
    subprocess.check_call([VENV_PYTHON, "-m", "pip", "install", "--quiet", "matplotlib", "hdrhistogram"])
    os.execv(VENV_PYTHON, [VENV_PYTHON] + sys.argv)


def stem(path):
    return os.path.splitext(os.path.basename(path))[0]


def plot_report(plt, path, out_dir):
    with open(path) as f:
        report = json.load(f)
    name = stem(path)
    title = f'{report["scenario"]} {report["connections"]} conns, {report["size"]} B, {report["mode"]}'
    timeline = report.get("timeline", [])
    written = []
    if timeline:
        t = [p["t"] for p in timeline]
        fig, (ax_rate, ax_lat) = plt.subplots(2, 1, sharex=True, figsize=(9, 6))
        ax_rate.plot(t, [p["rate"] for p in timeline], marker=".", label="per second")
        ax_rate.set_ylabel("msgs/s" if report["scenario"] in ("echo", "broadcast") else "per second")
        ax_open = ax_rate.twinx()
        ax_open.plot(t, [p["open"] for p in timeline], color="gray", linestyle="--", label="open connections")
        ax_open.set_ylabel("open connections")
        ax_rate.set_title(title)
        ax_rate.grid(True, alpha=0.3)
        measured = [p for p in timeline if p["max_us"] > 0]  # seconds without any latency sample are left out
        tm = [p["t"] for p in measured]
        ax_lat.plot(tm, [p["p50_us"] for p in measured], marker=".", label="p50")
        ax_lat.plot(tm, [p["p99_us"] for p in measured], marker=".", label="p99")
        ax_lat.plot(tm, [p["max_us"] for p in measured], marker=".", alpha=0.5, label="max")
        ax_lat.set_yscale("log")
        ax_lat.set_ylabel("latency (us)")
        ax_lat.set_xlabel("seconds since start")
        ax_lat.legend()
        ax_lat.grid(True, alpha=0.3)
        target = os.path.join(out_dir, f"{name}-timeline.png")
        fig.tight_layout()
        fig.savefig(target, dpi=110)
        plt.close(fig)
        written.append(target)
    latency = report.get("latency", {})
    if latency.get("count"):
        labels = ["p50", "p90", "p99", "p99.9", "max"]
        values = [latency[k] for k in ("p50_us", "p90_us", "p99_us", "p999_us", "max_us")]
        fig, ax = plt.subplots(figsize=(7, 4))
        ax.bar(labels, values)
        ax.set_yscale("log")
        ax.set_ylabel("latency (us)")
        ax.set_title(f"{title}\n{latency['measures']}", fontsize=9)
        for i, v in enumerate(values):
            ax.text(i, v, f"{v:.0f}", ha="center", va="bottom", fontsize=8)
        target = os.path.join(out_dir, f"{name}-percentiles.png")
        fig.tight_layout()
        fig.savefig(target, dpi=110)
        plt.close(fig)
        written.append(target)
    return written


def read_hist_log(path):
    """Yields (start_s, length_s, histogram) for each interval line of an HdrHistogram interval log."""
    from hdrh.histogram import HdrHistogram

    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith("#") or line.startswith('"'):
                continue
            fields = line.split(",")
            if fields[0].startswith("Tag="):
                fields = fields[1:]
            if len(fields) != 4:
                continue
            try:
                start, length = float(fields[0]), float(fields[1])
            except ValueError:
                continue
            yield start, length, HdrHistogram.decode(fields[3])


def plot_hist_log(plt, path, out_dir):
    from hdrh.histogram import HdrHistogram

    intervals = list(read_hist_log(path))
    if not intervals:
        print(f"plot.py: {path}: no intervals", file=sys.stderr)
        return []
    total = HdrHistogram(1, 100_000_000_000, 3)
    for _, _, h in intervals:
        total.add(h)
    name = stem(path)
    written = []
    # Percentile spectrum: x = 1/(1-q) on a log axis, as HdrHistogram plots do.
    quantiles = [0.0, 0.5, 0.75, 0.9, 0.95, 0.99, 0.995, 0.999, 0.9995, 0.9999, 0.99999]
    xs = [1 / (1 - q) for q in quantiles]
    ys = [total.get_value_at_percentile(q * 100) / 1e3 for q in quantiles]
    fig, ax = plt.subplots(figsize=(8, 4.5))
    ax.plot(xs, ys, marker="o")
    ax.set_xscale("log")
    ax.set_xticks(xs)
    ax.set_xticklabels([f"{q * 100:g}%" for q in quantiles], rotation=45, fontsize=8)
    # Latency on a log axis too: the tail is orders of magnitude above the median, and a linear axis
    # flattens everything below p99 onto the floor.
    ax.set_yscale("log")
    ax.set_ylabel("latency (us)")
    ax.set_title(f"{name}: latency by percentile ({total.get_total_count()} samples)")
    ax.grid(True, alpha=0.3)
    target = os.path.join(out_dir, f"{name}-spectrum.png")
    fig.tight_layout()
    fig.savefig(target, dpi=110)
    plt.close(fig)
    written.append(target)
    t = [start + length for start, length, _ in intervals]
    fig, ax = plt.subplots(figsize=(9, 4))
    for q, label in ((50, "p50"), (99, "p99"), (100, "max")):
        ax.plot(t, [h.get_value_at_percentile(q) / 1e3 for _, _, h in intervals], marker=".", label=label)
    ax.set_yscale("log")
    ax.set_ylabel("latency (us)")
    ax.set_xlabel("seconds since start")
    ax.set_title(f"{name}: latency per interval")
    ax.legend()
    ax.grid(True, alpha=0.3)
    target = os.path.join(out_dir, f"{name}-intervals.png")
    fig.tight_layout()
    fig.savefig(target, dpi=110)
    plt.close(fig)
    written.append(target)
    return written


SPECTRUM_QUANTILES = [0.0, 0.5, 0.75, 0.9, 0.95, 0.99, 0.995, 0.999, 0.9995, 0.9999, 0.99999]


def plot_spectra(plt, paths, name, title, out_dir):
    """One chart: the percentile spectrum of each run (rounds `-rN` of a run merged), on log-log axes."""
    import re

    from hdrh.histogram import HdrHistogram

    runs = {}
    for path in paths:
        label = re.sub(r"-r\d+$", "", stem(path))
        total = runs.setdefault(label, HdrHistogram(1, 100_000_000_000, 3))
        for _, _, h in read_hist_log(path):
            total.add(h)
    xs = [1 / (1 - q) for q in SPECTRUM_QUANTILES]
    fig, ax = plt.subplots(figsize=(9, 5.5))
    # Names that read SIZE-SERVER-LOAD (scripts/latency.sh): one colour per server, one marker per load.
    colours, markers = {}, {}
    cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for label in sorted(runs):
        total = runs[label]
        if not total.get_total_count():
            continue
        parts = label.split("-")
        server, load = (parts[1], parts[-1]) if len(parts) >= 3 else (label, "")
        colour = colours.setdefault(server, cycle[len(colours) % len(cycle)])
        marker = markers.setdefault(load, "os^Dv<>p*"[len(markers) % 9])
        ys = [total.get_value_at_percentile(q * 100) / 1e3 for q in SPECTRUM_QUANTILES]
        ax.plot(xs, ys, color=colour, marker=marker, markersize=4,
                label=f"{label} ({total.get_total_count()} samples)")
    ax.set_xscale("log")
    ax.set_xticks(xs)
    ax.set_xticklabels([f"{q * 100:g}%" for q in SPECTRUM_QUANTILES], rotation=45, fontsize=8)
    ax.set_yscale("log")
    ax.set_ylabel("latency (us)")
    ax.set_title(title or f"{name}: latency by percentile", fontsize=9)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    target = os.path.join(out_dir, f"{name}.png")
    fig.tight_layout()
    fig.savefig(target, dpi=90)
    plt.close(fig)
    return [target]


def plot_bench(plt, path, out_dir):
    with open(path) as f:
        results = json.load(f)
    rows = results["rows"]
    scenarios = list(dict.fromkeys(r["scenario"] for r in rows))
    servers = list(dict.fromkeys(r["server"] for r in rows))
    written = []
    for key, label, file in (
        ("msgs_per_s", "messages per second", "bench-throughput.png"),
        ("server_us_per_msg", "server CPU per message (us)", "bench-cpu.png"),
    ):
        fig, ax = plt.subplots(figsize=(10, 4.5))
        width = 0.8 / max(len(servers), 1)
        for i, server in enumerate(servers):
            values = []
            for s in scenarios:
                match = [r[key] for r in rows if r["server"] == server and r["scenario"] == s]
                values.append(match[0] if match else 0)
            ax.bar([j + i * width for j in range(len(scenarios))], values, width, label=server)
        ax.set_xticks([j + width * (len(servers) - 1) / 2 for j in range(len(scenarios))])
        ax.set_xticklabels(scenarios, rotation=20, fontsize=8)
        ax.set_ylabel(label)
        ax.set_title(f"{label} ({results.get('date_utc', '')}, same run)")
        ax.legend()
        ax.grid(True, axis="y", alpha=0.3)
        target = os.path.join(out_dir, file)
        fig.tight_layout()
        fig.savefig(target, dpi=110)
        plt.close(fig)
        written.append(target)
    return written


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("reports", nargs="*", help="loadgen --json reports")
    parser.add_argument("--hist-log", action="append", default=[], help="loadgen --hist-log files")
    parser.add_argument("--bench", action="append", default=[], help="scripts/bench.sh results.json")
    parser.add_argument("--spectrum-chart", metavar="NAME",
                        help="the --hist-log files' spectra on one chart, NAME.png (rounds -rN merged)")
    parser.add_argument("--title", default="", help="title of the --spectrum-chart chart")
    parser.add_argument("-o", "--out", default=".", help="output directory (default: current)")
    args = parser.parse_args()
    if not (args.reports or args.hist_log or args.bench):
        parser.error("nothing to plot")
    ensure_dependencies()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    os.makedirs(args.out, exist_ok=True)
    written = []
    for path in args.reports:
        written += plot_report(plt, path, args.out)
    if args.spectrum_chart:
        written += plot_spectra(plt, args.hist_log, args.spectrum_chart, args.title, args.out)
    else:
        for path in args.hist_log:
            written += plot_hist_log(plt, path, args.out)
    for path in args.bench:
        written += plot_bench(plt, path, args.out)
    for path in written:
        print(path)


if __name__ == "__main__":
    main()
