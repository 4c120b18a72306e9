"""`tritonlite perf`: perf_analyzer's flag names for the options it implements."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from tritonlite.perf.settings import (
    PerfError,
    PerfSettings,
    parse_concurrency_range,
    parse_request_rate_range,
    parse_shape,
)

if TYPE_CHECKING:
    from tritonlite.perf.measurement import LevelResult

DESCRIPTION = """\
Measure throughput and latency of a KServe v2 inference server (tritonlite,
Triton, or any other), perf_analyzer-style: for each load level, measurement
windows are repeated until three in a row agree within --stability-percentage;
the result is those three windows together. With Triton's statistics extension
the server-side queue and compute times are reported too.
"""


def add_perf_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "perf", help="measure a v2 server's throughput and latency (perf_analyzer's flags)",
        description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("-m", dest="model", required=True, help="model name")
    p.add_argument("-x", dest="version", default="", help="model version (default: the server's)")
    p.add_argument("-u", dest="url", default="",
                   help="server host:port (default localhost:8000 for http, :8001 for grpc)")
    p.add_argument("-i", dest="protocol", type=str.lower, choices=["http", "grpc"],
                   default="http")
    p.add_argument("--service-kind", default="triton",
                   help="triton: a server over -i; inprocess: tritonlite.Server in this "
                        "process, on --model-repository")
    p.add_argument("--model-repository", default="",
                   help="repository the inprocess kind serves")
    p.add_argument("-b", dest="batch_size", type=int, default=1, help="batch size of a request")
    p.add_argument("--concurrency-range", default=None, metavar="START:END:STEP",
                   help="concurrent requests, closed loop (default 1)")
    p.add_argument("--request-rate-range", default=None, metavar="START:END:STEP",
                   help="requests per second, open loop (instead of concurrency)")
    p.add_argument("--request-distribution", choices=["constant", "poisson"],
                   default="constant")
    p.add_argument("--shared-memory", choices=["none", "system", "cuda"], default="none")
    p.add_argument("--output-shared-memory-size", type=int, default=100 * 1024,
                   help="bytes per output and sample when the output size is not fixed")
    p.add_argument("--input-data", default="random",
                   help="zero, random, or a JSON file in perf_analyzer's format")
    p.add_argument("--string-length", type=int, default=128,
                   help="length of random BYTES elements")
    p.add_argument("--shape", action="append", default=[], metavar="NAME:D1,D2",
                   help="shape of a variable-size input, without the batch (repeatable)")
    p.add_argument("-p", "--measurement-interval", type=int, default=5000,
                   dest="measurement_interval", help="window length in milliseconds")
    p.add_argument("--percentile", type=int, default=-1,
                   help="stabilize on this latency percentile instead of the average")
    p.add_argument("-s", "--stability-percentage", type=float, default=10.0,
                   dest="stability_percentage")
    p.add_argument("-r", "--max-trials", type=int, default=10, dest="max_trials",
                   help="most windows per level")
    p.add_argument("--max-threads", type=int, default=16,
                   help="sending threads of a request-rate load, over all processes")
    p.add_argument("--processes", type=int, default=0,
                   help="load processes (default: one per CPU, at most one per concurrent "
                        "request)")
    p.add_argument("-f", dest="filename", default="", help="write perf_analyzer's CSV here")
    p.add_argument("--verbose-csv", action="store_true",
                   help="add perf_analyzer's verbose CSV columns")
    return p


def settings_from_args(ns: argparse.Namespace) -> PerfSettings:
    kind = ns.service_kind
    if kind == "triton_c_api":
        raise PerfError("--service-kind triton_c_api: use --service-kind inprocess "
                        "(tritonlite.Server in this process)")
    if ns.shared_memory == "cuda":
        raise PerfError("--shared-memory cuda is not supported; use system")
    if ns.concurrency_range and ns.request_rate_range:
        raise PerfError("give --concurrency-range or --request-rate-range, not both")
    shapes = dict(parse_shape(s) for s in ns.shape)
    return PerfSettings(
        model=ns.model,
        version=ns.version,
        url=ns.url,
        protocol=ns.protocol,
        service_kind=kind,
        model_repository=ns.model_repository,
        batch_size=ns.batch_size,
        concurrency=parse_concurrency_range(ns.concurrency_range or "1"),
        request_rates=(parse_request_rate_range(ns.request_rate_range)
                       if ns.request_rate_range else []),
        request_distribution=ns.request_distribution,
        shared_memory=ns.shared_memory,
        output_shared_memory_size=ns.output_shared_memory_size,
        input_data=ns.input_data,
        string_length=ns.string_length,
        shapes=shapes,
        measurement_interval_ms=ns.measurement_interval,
        percentile=ns.percentile,
        stability_percentage=ns.stability_percentage,
        max_trials=ns.max_trials,
        processes=ns.processes,
        max_threads=ns.max_threads,
    )


def run_perf(ns: argparse.Namespace) -> int:
    """The `tritonlite perf` command; returns the exit status."""
    from tritonlite.perf import report
    from tritonlite.perf.profiler import profile
    from tritonlite.perf.progress_line import ProgressLine

    try:
        settings = settings_from_args(ns)
        settings.validate()
    except PerfError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    progress = ProgressLine(sys.stdout)
    print(report.settings_text(settings), flush=True)

    def show(result: LevelResult) -> None:
        progress.clear()
        print(report.level_text(result, settings), flush=True)

    try:
        run = profile(settings, progress, on_level=show)
    except PerfError as exc:
        progress.clear()
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        progress.clear()
        print("interrupted", file=sys.stderr)
        return 130
    print(report.summary_text(run))
    print(report.table_text(run), end="", flush=True)
    if ns.filename:
        report.write_csv(ns.filename, run, ns.verbose_csv)
    unstable = [r for r in run.results if not r.stable]
    if unstable:
        print(f"warning: {len(unstable)} level(s) did not reach a stable measurement",
              file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    """`python -m tritonlite.perf`: the same command outside the tritonlite CLI."""
    parser = argparse.ArgumentParser(prog="tritonlite")
    add_perf_parser(parser.add_subparsers(dest="command", required=True))
    return run_perf(parser.parse_args(["perf", *(sys.argv[1:] if argv is None else argv)]))
