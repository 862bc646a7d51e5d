"""Results out: a table on stdout, JSON with the machine described, PNG plots."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from .stats import paired_ratios

ENGINE_COLUMNS = [("system", "{}"), ("dtype", "{}"), ("tokens/s", "{:.0f}"), ("seq/s", "{:.1f}"),
                  ("p50 ms", "{:.1f}"), ("p99 ms", "{:.1f}"), ("pad eff", "{:.1%}"), ("ratio", "{:.2f}x"),
                  ("best tok/s", "{:.0f}"), ("best ratio", "{:.2f}x"), ("paired", "{:.2f}x")]
SERVER_COLUMNS = [("system", "{}"), ("req/s", "{:.1f}"), ("seq/s", "{:.1f}"), ("tokens/s", "{:.0f}"),
                  ("p50 ms", "{:.1f}"), ("p99 ms", "{:.1f}"), ("failed", "{}"), ("pad eff", "{:.1%}"),
                  ("ratio", "{:.2f}x"), ("best req/s", "{:.1f}"), ("best ratio", "{:.2f}x"), ("paired", "{:.2f}x"),
                  ("vs http", "{:.2f}x")]
KEYS = {"system": "system", "dtype": "dtype", "tokens/s": "tokens_per_s", "seq/s": "sequences_per_s",
        "req/s": "requests_per_s", "p50 ms": "p50_ms", "p99 ms": "p99_ms", "pad eff": "padding_efficiency",
        "ratio": "ratio_to_peer", "failed": "failed", "peak": "fraction_of_peak",
        "best tok/s": "tokens_per_s_best", "best req/s": "requests_per_s_best", "best ratio": "ratio_to_peer_best",
        "paired": "ratio_paired_median", "vs http": "ratio_to_http"}


def _cell(fmt: str, value) -> str:
    return "-" if value is None else fmt.format(value)


def table(result: dict, show_peak: bool = False) -> str:
    """A fixed-width table of one result's systems."""
    result = with_ratios(result)
    columns = list(ENGINE_COLUMNS if result["mode"] == "engine" else SERVER_COLUMNS)
    if show_peak and result["mode"] == "engine":
        columns.append(("peak", "{:.1%}"))
    rows = [[_cell(fmt, system.get(KEYS[name])) for name, fmt in columns]
            for system in result["systems"].values()]
    header = [name for name, _ in columns]
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths)),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in rows]
    work = result["workload"]
    title = (f"{result['mode']} mode: preset {result['preset']}, workload {work['name']} "
             f"({work['count']} texts, mean {work['mean_tokens']:.1f} tokens), batch {result['batch_size']}")
    if result["mode"] == "server":
        title += f", {result['concurrency']} clients"
    note = f"\n(headline: {result['headline']}; {work['note']})" if work.get("note") else f"\n(headline: {result['headline']})"
    against = f"the best peer, {result['best_peer']}" if result.get("best_peer") else "the peer"
    return (title + "\n" + "\n".join(lines) + note
            + f"\n(ratios against {against}; paired: median over rounds of ours / peer in the same round)")


def with_ratios(result: dict) -> dict:
    """Fill in best-round and paired ratios (each system against the best peer, named by
    `best_peer`, else the last system). gRPC rows (server mode --protocol grpc) are compared
    with our HTTP row instead."""
    systems = [s for s in result["systems"].values() if s.get("protocol") != "grpc"]
    rate = "tokens_per_s" if result["mode"] == "engine" else "requests_per_s"
    if len(systems) >= 2 and all(rate + "_best" in s for s in systems):
        peer = result["systems"].get(result.get("best_peer") or "", systems[-1])
        peer.setdefault("ratio_to_peer_best", 1.0)
        for ours in (s for s in systems if s is not peer):
            ours.setdefault("ratio_to_peer_best", ours[rate + "_best"] / peer[rate + "_best"])
            paired = paired_ratios(ours["rounds"], peer["rounds"], rate)
            if paired:
                ours.setdefault("ratio_paired_median", statistics.median(paired))
                ours.setdefault("ratio_paired", paired)
    return result


def default_name(result: dict) -> str:
    name = f"{result['mode']}-{result['preset']}-{result['workload']['name']}-b{result['batch_size']}"
    if result["mode"] == "server":
        name += f"-c{result['concurrency']}"
    return name + f"-{result['machine']['jax_backend']}"


def write_json(result: dict, output_dir: Path, name: str) -> Path:
    output_dir.mkdir(parents=True, exist_ok=True)
    path = output_dir / f"{name}.json"
    path.write_text(json.dumps(result, indent=2, sort_keys=False) + "\n")
    return path


def write_plot(result: dict, output_dir: Path, name: str) -> Path | None:
    """Bars of throughput per system (median, with the best round marked) and p50/p99 latency."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    systems = list(result["systems"].values())
    names = [s["system"] for s in systems]
    rate_key = "tokens_per_s" if result["mode"] == "engine" else "requests_per_s"
    rate_label = "tokens/s" if result["mode"] == "engine" else "requests/s"
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.6))
    palette = ["#1f77b4", "#2ca02c", "#9467bd", "#8c564b", "#17becf"]
    colors = [palette[i % len(palette)] for i in range(len(systems) - 1)] + ["#ff7f0e"]
    left.bar(names, [s[rate_key] for s in systems], color=colors)
    for i, s in enumerate(systems):
        for r in s["rounds"]:
            left.plot(i, r[rate_key], "k.", markersize=4)
    left.set_ylabel(rate_label + " (median; dots: rounds)")
    left.set_title("throughput")
    x = range(len(systems))
    right.bar([i - 0.2 for i in x], [s["p50_ms"] or 0 for s in systems], width=0.4, label="p50", color="#7f7f7f")
    right.bar([i + 0.2 for i in x], [s["p99_ms"] or 0 for s in systems], width=0.4, label="p99", color="#d62728")
    right.set_xticks(list(x), names)
    for axis in (left, right):
        axis.tick_params(axis="x", labelsize=8, labelrotation=12)
    right.set_ylabel("latency per request (ms)" if result["mode"] == "server" else "latency per batch (ms)")
    right.set_title("latency")
    right.legend()
    machine = result["machine"]
    fig.suptitle(f"{result['mode']}: {result['preset']} / {result['workload']['name']} / "
                 f"batch {result['batch_size']}"
                 + (f" / {result['concurrency']} clients" if result["mode"] == "server" else "")
                 + f" - {machine['cpu_model']}, {machine['cpu_cores']} cores, "
                 f"{machine['jax_backend']}"
                 + (f" ({', '.join(sorted(set(machine.get('devices') or [])))})" if machine["jax_backend"] != "cpu" else ""),
                 fontsize=9)
    fig.tight_layout()
    output_dir.mkdir(parents=True, exist_ok=True)
    path = output_dir / f"{name}.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
