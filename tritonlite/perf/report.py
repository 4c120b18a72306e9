"""What `tritonlite perf` prints and writes: perf_analyzer's console blocks, a table, its CSV.

The CSV has perf_analyzer's columns and units (microseconds; rows sorted by
increasing throughput); a file written here reads the same in tools made for
perf_analyzer's (model-analyzer-style spreadsheets, scripts that parse it).
"""

from __future__ import annotations

import csv
from typing import TextIO

from tritonlite.perf.measurement import LevelResult
from tritonlite.perf.profiler import PerfRun
from tritonlite.perf.settings import PerfSettings


def _g(value: float) -> str:
    """A double as C++ streams print it by default (6 significant digits), as perf_analyzer."""
    return f"{value:.6g}"


def settings_text(settings: PerfSettings) -> str:
    kind = "Triton" if settings.service_kind == "triton" else "tritonlite in-process"
    metric = "average latency and throughput" if settings.percentile == -1 else (
        f"p{settings.percentile} latency and throughput")
    lines = [
        "*** Measurement Settings ***",
        f"  Batch size: {settings.batch_size}",
        f"  Service Kind: {kind}",
        '  Using "time_windows" mode for stabilization',
        f"  Stabilizing using {metric}",
        f"  Measurement window: {settings.measurement_interval_ms} msec",
    ]
    if settings.request_rate_mode:
        top = _g(max(settings.request_rates))
        lines.append(f"  Request Rate limit: {top} requests per seconds")
        lines.append(f"  Using {settings.request_distribution} distribution on request generation")
    else:
        lines.append(f"  Concurrency limit: {max(settings.concurrency)} concurrent requests")
    lines.append("  Using synchronous calls for inference")
    if settings.shared_memory == "system":
        lines.append("  Using system shared memory for inputs and outputs")
    return "\n".join(lines) + "\n"


def level_text(result: LevelResult, settings: PerfSettings) -> str:
    if result.mode == "request_rate":
        head = f"Request Rate: {_g(result.level)} inference requests per second"
    else:
        head = f"Request concurrency: {result.concurrency}"
    lines = [head, "  Client: ", f"    Request count: {result.request_count}"]
    if result.delayed_count and result.request_count:
        pct = 100.0 * result.delayed_count / result.request_count
        lines.append(f"    [WARNING] {pct:.2f}% of the requests were delayed: the load could "
                     "not keep the requested rate")
    lines.append(f"    Throughput: {_g(result.infer_per_sec)} infer/sec")
    if settings.percentile == -1:
        lines.append(f"    Avg latency: {result.avg_latency_us} usec "
                     f"(standard deviation {result.std_latency_us} usec)")
    for p, value in result.percentiles_us.items():
        lines.append(f"    p{p} latency: {value} usec")
    lines.append(f"    Avg client time: send {result.client_send_us} usec + receive "
                 f"{result.client_recv_us} usec")
    s = result.server
    if s is not None:
        lines += [
            "  Server: ",
            f"    Inference count: {s.inference_count}",
            f"    Execution count: {s.execution_count}",
            f"    Successful request count: {s.success_count}",
            f"    Avg request latency: {s.request_us} usec (overhead {s.overhead_us} usec + "
            f"queue {s.queue_us} usec + compute input {s.compute_input_us} usec + "
            f"compute infer {s.compute_infer_us} usec + compute output "
            f"{s.compute_output_us} usec)",
        ]
    if not result.stable:
        lines.append(
            f"  [WARNING] no stable measurement within {settings.max_trials} windows "
            "(the last 3 are reported); increase --measurement-interval or "
            "--stability-percentage"
        )
    return "\n".join(lines) + "\n"


def summary_text(run: PerfRun) -> str:
    settings = run.settings
    which = "Average" if settings.percentile == -1 else f"p{settings.percentile}"
    lines = [f"Inferences/Second vs. Client {which} Batch Latency"]
    for r in run.results:
        where = (f"Request Rate: {_g(r.level)}" if r.mode == "request_rate"
                 else f"Concurrency: {r.concurrency}")
        lines.append(f"{where}, throughput: {_g(r.infer_per_sec)} infer/sec, "
                     f"latency {r.stabilizing_latency_us} usec")
    return "\n".join(lines) + "\n"


def table_text(run: PerfRun) -> str:
    """One row per level: throughput, the percentiles in ms, the server's queue/compute split."""
    server = run.includes_server_stats
    level_name = "Rate/s" if run.settings.request_rate_mode else "Concurrency"
    head = [level_name, "Infer/sec", "p50 ms", "p90 ms", "p95 ms", "p99 ms"]
    if server:
        head += ["Queue us", "Compute us", "Overhead us"]
    rows = [head]
    for r in run.results:
        row = [
            _g(r.level) if r.mode == "request_rate" else str(r.concurrency),
            f"{r.infer_per_sec:.1f}",
            *(f"{r.p_ms(p):.3f}" for p in (50, 90, 95, 99)),
        ]
        if server and r.server is not None:
            row += [str(r.server.queue_us), str(r.server.compute_us), str(r.server.overhead_us)]
        rows.append(row)
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    out = ["  ".join(cell.rjust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]
    out.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(out) + "\n"


def csv_header(run: PerfRun, verbose: bool = False) -> list[str]:
    settings = run.settings
    head = ["Request Rate" if settings.request_rate_mode else "Concurrency",
            "Inferences/Second", "Client Send"]
    if run.includes_server_stats:
        head += ["Network+Server Send/Recv", "Server Queue", "Server Compute Input",
                 "Server Compute Infer", "Server Compute Output"]
    head.append("Client Recv")
    if run.results:
        head += [f"p{p} latency" for p in run.results[0].percentiles_us]
    if verbose:
        if settings.percentile == -1:
            head.append("Avg latency")
        head += ["request/response", "response wait"]
    return head


def csv_rows(run: PerfRun, verbose: bool = False) -> list[list[str]]:
    rows = []
    for r in sorted(run.results, key=lambda r: r.infer_per_sec):
        level = _g(r.level) if r.mode == "request_rate" else str(r.concurrency)
        row = [level, _g(r.infer_per_sec), str(r.client_send_us)]
        if run.includes_server_stats and r.server is not None:
            s = r.server
            row += [str(r.network_server_us), str(s.queue_us), str(s.compute_input_us),
                    str(s.compute_infer_us), str(s.compute_output_us)]
        row.append(str(r.client_recv_us))
        row += [str(v) for v in r.percentiles_us.values()]
        if verbose:
            if run.settings.percentile == -1:
                row.append(str(r.avg_latency_us))
            wait = r.avg_latency_us - r.client_send_us - r.client_recv_us
            row += [str(r.client_send_us + r.client_recv_us), str(max(0, wait))]
        rows.append(row)
    return rows


def write_csv(path: str, run: PerfRun, verbose: bool = False) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        write_csv_to(f, run, verbose)


def write_csv_to(stream: TextIO, run: PerfRun, verbose: bool = False) -> None:
    writer = csv.writer(stream, lineterminator="\n")
    writer.writerow(csv_header(run, verbose))
    writer.writerows(csv_rows(run, verbose))
