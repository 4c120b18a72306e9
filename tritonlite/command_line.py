"""tritonserver's command line: every flag of Triton 2.51 (plus a few of later
releases and tritonlite's own), with tritonserver's syntax and value rules.

The grammar is GNU getopt_long's, as tritonserver uses it: long options only,
`--flag=value` or `--flag value`, any unambiguous prefix of a flag name, and a
value-less flag refuses `=value`. Numbers are read the way std::stoi / stoll /
stod read them (a leading number; whatever follows it is ignored), booleans
as true/on/1 and false/off/0 in any case. Error texts are tritonserver's.

Each flag records whether it means anything here (`effect` is empty) or why
it has none; the server logs one line per flag of the second kind.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

INT32 = (-(2**31), 2**31 - 1)
INT64 = (-(2**63), 2**63 - 1)
_LEADING_INT = re.compile(r"\s*[+-]?\d+")
_LEADING_FLOAT = re.compile(
    r"\s*[+-]?(?:(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|inf(?:inity)?|nan)", re.IGNORECASE
)


class FlagError(Exception):
    """A command line tritonserver would refuse; the text is what it prints."""


# -- value parsers (ValueError carries tritonserver's text) -----------------------


def _integer(text: str, bounds: tuple[int, int]) -> int:
    match = _LEADING_INT.match(text)
    if match is None:
        raise ValueError(f"Invalid option value. Got {text}")
    value = int(match.group())
    if not bounds[0] <= value <= bounds[1]:
        raise ValueError(f"Provided option value is out of bound. Got {text}")
    return value


def int32(text: str) -> int:
    return _integer(text, INT32)


def int64(text: str) -> int:
    return _integer(text, INT64)


def uint64(text: str) -> int:
    # std::stoull takes a minus sign and wraps the value around.
    value = _integer(text, (-(2**64) + 1, 2**64 - 1))
    return value % 2**64


def double(text: str) -> float:
    match = _LEADING_FLOAT.match(text)
    if match is None:
        raise ValueError(f"Invalid option value. Got {text}")
    value = float(match.group())
    if value in (float("inf"), float("-inf")) and "inf" not in match.group().lower():
        raise ValueError(f"Provided option value is out of bound. Got {text}")
    return value


def boolean(text: str) -> bool:
    lowered = text.lower()
    if lowered in ("true", "on", "1"):
        return True
    if lowered in ("false", "off", "0"):
        return False
    raise ValueError(f"invalid value for bool option: {text}")


def positive(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """A number that must be above zero."""

    def check(text: str) -> Any:
        value = parse(text)
        if value <= 0:
            raise ValueError(f"Provided option value is out of bound. Got {text}")
        return value

    check.__name__ = parse.__name__  # the usage placeholder follows the number's kind
    return check


def int_or_bool(text: str) -> int:
    """--log-verbose: true/false or a level."""
    lowered = text.lower()
    if lowered == "true":
        return 1
    if lowered == "false":
        return 0
    return int32(text)


def string(text: str) -> str:
    return text


def nonempty(flag: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if not text:
            raise ValueError(f"Error: empty argument for --{flag}")
        return text

    return parse


def choice(
    flag: str, values: Sequence[str], *, fold_case: bool = True
) -> Callable[[str], str]:
    def parse(text: str) -> str:
        key = text.lower() if fold_case else text
        if key not in values:
            raise ValueError(f"invalid argument for --{flag}")
        return key

    return parse


def pair(
    first: Callable[[str], Any], second: Callable[[str], Any], delim: str
) -> Callable[[str], tuple[Any, Any]]:
    def parse(text: str) -> tuple[Any, Any]:
        at = text.find(delim)
        if at < 0:
            raise ValueError(
                "Cannot parse pair option due to incorrect number of inputs."
                f"--<pair option> argument requires format <first>{delim}<second>. "
                f"Found: {text}"
            )
        return first(text[:at]), second(text[at + len(delim):])

    return parse


def _named_setting(
    text: str, flag: str, kind: str, noun: str, *, global_allowed: bool
) -> tuple[str, str, str]:
    """`<name>,<setting>=<value>` (or `<setting>=<value>` where allowed)."""
    comma = text.find(",")
    equals = text.find("=", comma + 1)
    wanted = f"'<{kind}>,<setting>=<value>'"
    if comma == 0 or (comma < 0 and not global_allowed):
        also = " or <setting>=<value>" if global_allowed else ""
        raise ValueError(
            f"No {noun} specified. --{flag} option format is "
            f"<{kind}>,<setting>=<value>{also}. Got {text}"
        )
    name = text[:comma] if comma > 0 else ""
    if equals < 0:
        raise ValueError(f"--{flag} option format is {wanted}. Got {text}")
    setting, value = text[comma + 1:equals], text[equals + 1:]
    if not setting or not value:
        raise ValueError(f"--{flag} option format is {wanted}. Got {text}")
    return name, setting, value


def backend_setting(text: str) -> tuple[str, str, str]:
    """--backend-config: `<backend>,<setting>=<value>` or a global `<setting>=<value>`."""
    return _named_setting(
        text, "backend-config", "backend name", "backend", global_allowed=True
    )


def cache_setting(text: str) -> tuple[str, str, str]:
    return _named_setting(text, "cache-config", "cache name", "cache", global_allowed=False)


def trace_setting(text: str) -> tuple[str, str, str]:
    """--trace-config: `[triton|opentelemetry,]<setting>=<value>`."""
    comma = text.find(",")
    if comma > 0:
        mode = text[:comma].lower()
        if mode not in ("triton", "opentelemetry"):
            raise ValueError(
                f"invalid value for trace mode option: {text[:comma]}. "
                'Available options are "triton" and "opentelemetry"'
            )
    name, setting, value = _named_setting(
        text, "trace-config", "trace mode", "trace mode", global_allowed=True
    )
    return name.lower(), setting, value


def metrics_setting(text: str) -> tuple[str, str]:
    """--metrics-config: `<setting>=<value>` (no names before a comma)."""
    equals = text.find("=")
    wrong = f"--metrics-config option format is <setting>=<value>. Got {text}"
    if equals < 0 or "," in text[:equals]:
        raise ValueError(wrong)
    setting, value = text[:equals], text[equals + 1:]
    if not setting or not value:
        raise ValueError(wrong)
    return setting, value


def _generic_setting(text: str, flag: str, first: str, kind: str) -> tuple[str, str, str]:
    at = text.find(first)
    equals = text.find("=", at + 1)
    wrong = f"--{flag} option format is '<{kind}>{first}<setting>=<value>'. Got {text}"
    if at < 0 or equals < 0:
        raise ValueError(wrong)
    name, setting, value = text[:at], text[at + 1:equals], text[equals + 1:]
    if not name or not setting or not value:
        raise ValueError(wrong)
    return name, setting, value


def host_policy(text: str) -> tuple[str, str, str]:
    return _generic_setting(text, "host-policy", ",", "policy name")


def restricted(flag: str) -> Callable[[str], tuple[str, str, str]]:
    """--http-restricted-api / --grpc-restricted-protocol: `<names>:<key>=<value>`."""

    def parse(text: str) -> tuple[str, str, str]:
        return _generic_setting(text, flag, ":", "config name")

    return parse


def rate_limit_resource(text: str) -> tuple[str, int, int]:
    """`<name>:<count>[:<device>]`; device -1 means every device."""
    wrong = (
        "--rate-limit-resource option format is '<resource_name>:<count>:<device>' "
        f"or '<resource_name>:<count>'. Got {text}"
    )
    parts = text.split(":")
    if len(parts) == 2:
        return parts[0], int32(parts[1]), -1
    if len(parts) == 3:
        return parts[0], int32(parts[1]), int32(parts[2])
    raise ValueError(wrong)


# -- the flag table ------------------------------------------------------------------


@dataclass(frozen=True)
class Flag:
    name: str
    parse: Callable[[str], Any] | None  # None: the flag takes no value
    default: Any
    group: str
    help: str
    effect: str = ""  # why the flag does nothing here; empty when it is honoured
    repeat: bool = False
    dest_name: str = ""  # attribute name when it is not the flag's name
    warn: bool = False  # a non-default value asks for something unsafe to ignore quietly
    deprecated: str = ""  # tritonserver's warning, printed when the flag is used
    arg: str = ""  # usage placeholder, where the parser's name does not give it

    @property
    def dest(self) -> str:
        return self.dest_name or self.name.replace("-", "_")

    @property
    def placeholder(self) -> str:
        if self.parse is None:
            return ""
        if self.arg:
            return self.arg
        return _PLACEHOLDERS.get(getattr(self.parse, "__name__", ""), "<string>")


_PLACEHOLDERS = {
    "int32": "<integer>",
    "int64": "<integer>",
    "uint64": "<integer>",
    "int_or_bool": "<integer>",
    "double": "<float>",
    "boolean": "<boolean>",
    "backend_setting": "<<string>,<string>=<string>>",
    "cache_setting": "<<string>,<string>=<string>>",
    "trace_setting": "<<string>,<string>=<string>>",
    "host_policy": "<<string>,<string>=<string>>",
    "metrics_setting": "<<string>=<string>>",
    "rate_limit_resource": "<<string>:<integer>:<integer>>",
}

_NO_TLS = "TLS is not supported: gRPC is served as cleartext HTTP/2"
_NO_TRACE = "tracing is not built; /v2/trace/setting reports it off"
_NO_CACHE = "there is no response cache"
_NO_POOL = "tensors live in the server's shared-memory arena (--shm-arena-bytes)"
_RESTRICTED = "<<string>:<string>=<string>>"


def _deprecated_trace(flag: str, instead: str) -> str:
    return (
        f"Warning: '--{flag}' has been deprecated and will be removed in future "
        f"releases. Please use '--trace-config {instead} instead."
    )


FLAGS: tuple[Flag, ...] = (
    # Server
    Flag("id", string, "triton", "Server", "name the server reports in its metadata"),
    Flag("exit-timeout-secs", int32, 30, "Server",
         "seconds SIGINT/SIGTERM wait for in-flight requests before exiting"),
    # Logging
    Flag("log-verbose", int_or_bool, 0, "Logging", "verbose level (0: off)"),
    Flag("log-info", boolean, True, "Logging", "log info lines"),
    Flag("log-warning", boolean, True, "Logging", "log warning lines"),
    Flag("log-error", boolean, True, "Logging", "log error lines"),
    Flag("log-format", choice("log-format", ("default", "ISO8601"), fold_case=False),
         "default", "Logging", "'default' (LMMDD hh:mm:ss.ffffff) or 'ISO8601'"),
    Flag("log-file", string, "", "Logging",
         "append the log (and the model workers' log lines) to this file"),
    # Model repository
    Flag("model-store", string, [], "Model Repository", "same as --model-repository",
         repeat=True, dest_name="model_repository"),
    Flag("model-repository", string, [], "Model Repository",
         "model repository folder (repeatable)", repeat=True),
    Flag("exit-on-error", boolean, True, "Model Repository",
         "exit when a model fails to load at start-up"),
    Flag("disable-auto-complete-config", None, False, "Model Repository",
         "never call a backend's auto-complete"),
    Flag("strict-readiness", boolean, True, "Model Repository",
         "ready only while every model is available"),
    Flag("model-control-mode", choice("model-control-mode", ("none", "poll", "explicit")),
         "none", "Model Repository", "none, poll or explicit"),
    Flag("repository-poll-secs", double, 15.0, "Model Repository",
         "seconds between repository polls (fractions accepted)"),
    Flag("load-model", string, [], "Model Repository",
         "model to load at start in explicit mode ('*': all; repeatable)", repeat=True),
    Flag("model-config-name", nonempty("model-config-name"), "", "Model Repository",
         "use <model>/configs/<name>.pbtxt where it exists, else config.pbtxt"),
    Flag("model-load-thread-count", int32, 4, "Model Repository", "",
         effect="models load concurrently on the event loop"),
    Flag("model-load-retry-count", int32, 0, "Model Repository", "",
         effect="a failed load is not retried"),
    Flag("model-namespacing", boolean, False, "Model Repository", "",
         effect="model names are global across repositories", warn=True),
    Flag("enable-peer-access", boolean, True, "Model Repository", "",
         effect="CUDA peer access is left to the frameworks"),
    # HTTP
    Flag("allow-http", boolean, True, "HTTP", "serve HTTP/REST"),
    Flag("http-address", string, "0.0.0.0", "HTTP", "HTTP bind address"),
    Flag("http-port", int32, 8000, "HTTP", "HTTP port"),
    Flag("reuse-http-port", boolean, False, "HTTP", "", effect="the port is bound exclusively"),
    Flag("http-header-forward-pattern", string, "", "HTTP", "",
         effect="headers are not forwarded as request parameters"),
    Flag("http-thread-count", int32, 8, "HTTP", "", effect="one event loop serves HTTP"),
    Flag("http-restricted-api", restricted("http-restricted-api"), [], "HTTP",
         "<categories>:<header>=<value>: those API categories need the header (repeatable)",
         repeat=True, arg=_RESTRICTED),
    Flag("http-max-input-size", int64, None, "HTTP",
         "largest request body in bytes (same as --max-request-bytes)"),
    # GRPC
    Flag("allow-grpc", boolean, True, "GRPC", "serve gRPC"),
    Flag("grpc-address", string, "0.0.0.0", "GRPC", "gRPC bind address"),
    Flag("grpc-port", int32, 8001, "GRPC", "gRPC port"),
    Flag("reuse-grpc-port", boolean, False, "GRPC", "", effect="the port is bound exclusively"),
    Flag("grpc-header-forward-pattern", string, "", "GRPC", "",
         effect="headers are not forwarded as request parameters"),
    Flag("grpc-infer-allocation-pool-size", int32, 8, "GRPC", "",
         effect="response objects are not pooled"),
    Flag("grpc-max-response-pool-size", int32, 0, "GRPC", "",
         effect="response objects are not pooled"),
    Flag("grpc-infer-thread-count", int32, 2, "GRPC", "", effect="one event loop serves gRPC"),
    Flag("grpc-use-ssl", boolean, False, "GRPC", "", effect=_NO_TLS, warn=True),
    Flag("grpc-use-ssl-mutual", boolean, False, "GRPC", "", effect=_NO_TLS, warn=True),
    Flag("grpc-server-cert", string, "", "GRPC", "", effect=_NO_TLS),
    Flag("grpc-server-key", string, "", "GRPC", "", effect=_NO_TLS),
    Flag("grpc-root-cert", string, "", "GRPC", "", effect=_NO_TLS),
    Flag("grpc-infer-response-compression-level",
         choice("grpc_infer_response_compression_level", ("none", "low", "medium", "high")),
         "none", "GRPC", "", effect="responses are not compressed"),
    Flag("grpc-keepalive-time", int32, 7_200_000, "GRPC",
         "milliseconds between keepalive pings"),
    Flag("grpc-keepalive-timeout", int32, 20_000, "GRPC",
         "milliseconds to wait for a ping's acknowledgement"),
    Flag("grpc-keepalive-permit-without-calls", boolean, False, "GRPC",
         "allow keepalive pings with no call in flight"),
    Flag("grpc-http2-max-pings-without-data", int32, 2, "GRPC",
         "pings allowed without data (0: no limit)"),
    Flag("grpc-http2-min-recv-ping-interval-without-data", int32, 300_000, "GRPC",
         "shortest accepted interval between a peer's pings (ms)"),
    Flag("grpc-http2-max-ping-strikes", int32, 2, "GRPC",
         "bad pings tolerated before GOAWAY (0: any number)"),
    Flag("grpc-max-connection-age", int32, None, "GRPC", "longest life of a connection (ms)"),
    Flag("grpc-max-connection-age-grace", int32, None, "GRPC",
         "grace after the maximum age (ms)"),
    Flag("grpc-restricted-protocol", restricted("grpc-restricted-protocol"), [], "GRPC",
         "<categories>:<key>=<value>: those RPCs need metadata triton-grpc-protocol-<key> "
         "(repeatable)", repeat=True, arg=_RESTRICTED),
    # Sagemaker, Vertex AI
    Flag("allow-sagemaker", boolean, False, "Sagemaker", "", effect="no SageMaker endpoint"),
    Flag("sagemaker-port", int32, 8080, "Sagemaker", "", effect="no SageMaker endpoint"),
    Flag("sagemaker-safe-port-range", pair(int32, int32, "-"), None, "Sagemaker", "",
         effect="no SageMaker endpoint", arg="<<integer>-<integer>>"),
    Flag("sagemaker-thread-count", int32, 8, "Sagemaker", "", effect="no SageMaker endpoint"),
    Flag("allow-vertex-ai", boolean, False, "Vertex", "", effect="no Vertex AI endpoint"),
    Flag("vertex-ai-port", int32, 8080, "Vertex", "", effect="no Vertex AI endpoint"),
    Flag("vertex-ai-thread-count", int32, 8, "Vertex", "", effect="no Vertex AI endpoint"),
    Flag("vertex-ai-default-model", string, "", "Vertex", "", effect="no Vertex AI endpoint"),
    # Metrics
    Flag("allow-metrics", boolean, True, "Metrics", "serve Prometheus /metrics"),
    Flag("allow-gpu-metrics", boolean, True, "Metrics", "",
         effect="GPU metrics are not exported"),
    Flag("allow-cpu-metrics", boolean, True, "Metrics", "",
         effect="the CPU and memory gauges are always exported"),
    Flag("metrics-address", string, "", "Metrics", "metrics bind address (default: HTTP's)"),
    Flag("metrics-port", int32, 8002, "Metrics", "metrics port"),
    Flag("metrics-interval-ms", int32, 2000, "Metrics",
         "milliseconds between CPU and memory samples", arg="<float>"),
    Flag("metrics-config", metrics_setting, [], "Metrics", "",
         effect="the metric families are fixed", repeat=True),
    # Tracing
    Flag("trace-config", trace_setting, [], "Tracing", "", effect=_NO_TRACE, repeat=True),
    # Backend, repository agents, cache
    Flag("backend-directory", string, "", "Backend",
         "folder of Python-based backends (<dir>/<backend>/model.py)"),
    Flag("backend-config", backend_setting, [], "Backend",
         "<backend>,<setting>=<value> (repeatable)", repeat=True),
    Flag("repoagent-directory", string, "/opt/tritonserver/repoagents", "Repository Agent", "",
         effect="repository agents are not supported"),
    Flag("cache-config", cache_setting, [], "Response Cache", "", effect=_NO_CACHE, repeat=True),
    Flag("cache-directory", string, "/opt/tritonserver/caches", "Response Cache", "",
         effect=_NO_CACHE),
    # Rate limiter
    Flag("rate-limit", choice("rate-limit", ("execution_count", "off")), "off", "Rate Limiter",
         "execution_count or off"),
    Flag("rate-limit-resource", rate_limit_resource, [], "Rate Limiter",
         "<name>:<count>[:<device>] (repeatable; resources are per box)", repeat=True),
    # Memory / device
    Flag("pinned-memory-pool-byte-size", int64, 1 << 28, "Memory/Device Management", "",
         effect=_NO_POOL),
    Flag("cuda-memory-pool-byte-size", pair(int32, uint64, ":"), [], "Memory/Device Management",
         "", effect=_NO_POOL, repeat=True, arg="<<integer>:<integer>>"),
    Flag("cuda-virtual-address-size", pair(int32, uint64, ":"), [], "Memory/Device Management",
         "", effect="implicit state is not growable GPU memory", repeat=True,
         arg="<<integer>:<integer>>"),
    Flag("min-supported-compute-capability", double, 6.0, "Memory/Device Management", "",
         effect="every visible GPU is used"),
    Flag("buffer-manager-thread-count", int32, 0, "Memory/Device Management", "",
         effect="tensor copies happen in the worker processes"),
    Flag("host-policy", host_policy, [], "Memory/Device Management", "",
         effect="host policies are not supported", repeat=True),
    Flag("model-load-gpu-limit", pair(int32, double, ":"), [], "Memory/Device Management", "",
         effect="GPU memory is not checked before a load", repeat=True,
         arg="<<device_id>:<fraction>>"),
    # Client shared memory (a later release's flag)
    Flag("allow-client-shm", boolean, False, "Shared Memory",
         "let clients register shared memory regions for inputs and outputs (default false, "
         "as tritonserver 26.04+)"),
    # Deprecated by tritonserver
    Flag("strict-model-config", boolean, False, "DEPRECATED",
         "same as --disable-auto-complete-config when true",
         deprecated="Warning: '--strict-model-config' has been deprecated! "
         "Please use '--disable-auto-complete-config' instead."),
    Flag("response-cache-byte-size", int64, 0, "DEPRECATED", "", effect=_NO_CACHE),
    Flag("trace-file", string, "", "DEPRECATED", "", effect=_NO_TRACE,
         deprecated=_deprecated_trace("trace-file", "triton,file=<filepath>")),
    Flag("trace-level", string, [], "DEPRECATED", "", effect=_NO_TRACE, repeat=True,
         deprecated=_deprecated_trace("trace-level", "level=<OFF|TIMESTAMPS|TENSORS>")),
    Flag("trace-rate", int32, 1000, "DEPRECATED", "", effect=_NO_TRACE,
         deprecated=_deprecated_trace("trace-rate", "rate=<rate value>")),
    Flag("trace-count", int32, -1, "DEPRECATED", "", effect=_NO_TRACE,
         deprecated=_deprecated_trace("trace-count", "count=<count value>")),
    Flag("trace-log-frequency", int32, 0, "DEPRECATED", "", effect=_NO_TRACE,
         deprecated=_deprecated_trace(
             "trace-log-frequency", "triton,log-frequency=<log frequency value>")),
    # tritonlite's own
    Flag("http-server", choice("http-server", ("lean", "hypercorn")), "lean", "tritonlite",
         "lean: asyncio + httptools; hypercorn: starlette on hypercorn"),
    Flag("grpc-server", choice("grpc-server", ("lean", "aio")), "lean", "tritonlite",
         "lean: tritonlite's HTTP/2 server; aio: grpcio's grpc.aio"),
    Flag("grpc-http2-max-concurrent-streams", int32, None, "tritonlite",
         "streams one gRPC connection may have open (default: 100 on lean, unlimited on aio)"),
    Flag("grpc-http2-settings-timeout", int32, None, "tritonlite",
         "ms for a client to acknowledge our SETTINGS (default: 2 x keepalive timeout, >= 60 s)"),
    Flag("grpc-http2-send-timeout", int32, 60_000, "tritonlite",
         "ms an answer may wait for a flow-control window (lean)"),
    Flag("grpc-http2-max-unsent-bytes", int64, 256 * 1024 * 1024, "tritonlite",
         "response bytes one gRPC connection may hold unsent (lean)"),
    Flag("max-request-bytes", int64, 2**31 - 1, "tritonlite", "largest request body (bytes)"),
    Flag("max-request-inputs", int32, 256, "tritonlite", "inputs (and outputs) per request"),
    Flag("max-tensor-dims", int32, 16, "tritonlite", "dimensions per input tensor"),
    Flag("max-tensor-elements", int64, 2**31, "tritonlite", "elements per input tensor"),
    Flag("shm-arena-bytes", int64, 8 * 1024**3, "tritonlite",
         "most memory the server's tensor arena may take"),
    Flag("shm-max-regions", positive(int32), 4096, "tritonlite",
         "system shared memory regions registered in all (at most a quarter of the "
         "open-file limit); past it a registration gets 429 / RESOURCE_EXHAUSTED"),
    Flag("shm-max-regions-per-client", positive(int32), 1024, "tritonlite",
         "system shared memory regions one client (tenant, else uid or host) may "
         "register; past it 429 / RESOURCE_EXHAUSTED"),
    Flag("shm-batch-in-place", boolean, False, "tritonlite",
         "models that batch read and write client regions in place, several clients "
         "in one batch (no copy; only for trusted clients: a region shrunk during a "
         "batch fails every request of that batch)"),
    Flag("frontend-processes", positive(int32), 1, "tritonlite",
         "processes serving the HTTP and gRPC ports (SO_REUSEPORT) in front of one core; "
         "1: the core's own process only"),
    # HTTP connection limits (frontends/http/http_limits.py holds the same defaults)
    Flag("http-max-connections", positive(int32), 1000, "tritonlite",
         "open HTTP connections; past it the longest-idle one is closed or the new one "
         "gets 503 (at most half the open-file limit)"),
    Flag("http-keepalive-timeout", positive(double), 75.0, "tritonlite",
         "seconds an idle HTTP keep-alive connection stays open"),
    Flag("http-header-timeout", positive(double), 30.0, "tritonlite",
         "seconds a request head may take (408 after)"),
    Flag("http-body-timeout", positive(double), 30.0, "tritonlite",
         "seconds a request body may go without progress (408 after)"),
    Flag("http-send-timeout", positive(double), 30.0, "tritonlite",
         "seconds a reply may wait for a client that does not read (closed after)"),
    Flag("http-max-url-bytes", positive(int32), 8192, "tritonlite",
         "longest request URL (414 past it)"),
    Flag("http-max-header-bytes", positive(int32), 65536, "tritonlite",
         "header names and values per request, in bytes (431 past it)"),
    Flag("http-max-headers", positive(int32), 100, "tritonlite",
         "header fields per request (431 past it)"),
    Flag("tenant-config", string, "", "tritonlite",
         "JSON file of tenants: credentials, models, API categories, quotas "
         "(docs/security.md)", arg="<path>"),
)

# tritonserver's response-cache flag and --cache-config exclude each other.
_CACHE_CONFLICT = (
    "Error: Incompatible flags --response-cache-byte-size and --cache-config both "
    "provided. Please provide one or the other."
)
_LOAD_MODEL_NEEDS_EXPLICIT = (
    "Error: Use of '--load-model' requires setting '--model-control-mode=explicit' as well."
)


def _lookup(name: str, typed: str, prog: str) -> Flag:
    by_name = {f.name: f for f in FLAGS}
    if name in by_name:
        return by_name[name]
    matches = [f for f in FLAGS if f.name.startswith(name)] if name else []
    # Prefixes naming one destination (e.g. --model-store/--model-repository) are fine.
    if matches and len({f.dest for f in matches}) == 1:
        return matches[0]
    if not matches:
        raise FlagError(f"{prog}: unrecognized option '{typed}'")
    seen: set[str] = set()
    names = []
    for f in matches:
        if f.dest not in seen:
            seen.add(f.dest)
            names.append(f"'--{f.name}'")
    raise FlagError(f"{prog}: option '--{name}' is ambiguous; possibilities: {' '.join(names)}")


def parse_command_line(argv: Sequence[str], prog: str = "tritonserver") -> argparse.Namespace:
    """Parse tritonserver flags; raise FlagError with tritonserver's text.

    The namespace has one attribute per flag destination, plus `given`: the
    (flag, raw value) pairs in command-line order, and `help`.
    """
    values: dict[str, Any] = {}
    for f in FLAGS:
        values[f.dest] = list(f.default) if f.repeat else f.default
    given: list[tuple[Flag, str]] = []
    positional: list[str] = []
    help_wanted = False
    i = 0
    while i < len(argv):
        arg = argv[i]
        i += 1
        if arg == "--":
            positional.extend(argv[i:])
            break
        if not arg.startswith("--"):
            if arg.startswith("-") and len(arg) > 1:
                raise FlagError(f"{prog}: invalid option -- '{arg[1]}'")
            positional.append(arg)
            continue
        name, has_value, value = arg[2:].partition("=")
        if name == "help" and not has_value:
            help_wanted = True
            continue
        flag = _lookup(name, arg, prog)
        if flag.parse is None:
            if has_value:
                raise FlagError(f"{prog}: option '--{flag.name}' doesn't allow an argument")
            values[flag.dest] = True
            given.append((flag, ""))
            continue
        if not has_value:
            if i >= len(argv):
                raise FlagError(f"{prog}: option '--{flag.name}' requires an argument")
            value = argv[i]
            i += 1
        try:
            parsed = flag.parse(value)
        except ValueError as exc:
            raise FlagError(f'Bad option: "--{flag.name}".\n{exc}') from None
        if flag.deprecated:
            print(flag.deprecated, file=sys.stderr)
        if flag.repeat:
            if parsed not in values[flag.dest]:
                values[flag.dest].append(parsed)
        else:
            values[flag.dest] = parsed
        given.append((flag, value))
    if positional and not help_wanted:
        raise FlagError(f"Unexpected argument: {positional[0]}")
    ns = argparse.Namespace(**values, given=given, help=help_wanted)
    if not help_wanted:
        _check_together(ns)
    return ns


def _check_together(ns: argparse.Namespace) -> None:
    """What tritonserver checks once every flag is read."""
    names = {flag.name for flag, _ in ns.given}
    if ns.load_model and ns.model_control_mode != "explicit":
        raise FlagError(_LOAD_MODEL_NEEDS_EXPLICIT)
    if "response-cache-byte-size" in names and "cache-config" in names:
        raise FlagError(_CACHE_CONFLICT)
    if ns.disable_auto_complete_config:
        if "strict-model-config" in names and not ns.strict_model_config:
            print(
                "Warning: Overriding deprecated '--strict-model-config' from False to True "
                "in favor of '--disable-auto-complete-config'!",
                file=sys.stderr,
            )
        ns.strict_model_config = True
    if not ns.metrics_address:
        ns.metrics_address = ns.http_address
    _check_restrictions(ns)
    _check_ports(ns)


def _check_restrictions(ns: argparse.Namespace) -> None:
    """Each restricted category once per protocol, named as tritonserver names them."""
    from tritonlite.core.authorization import Door, restrictions_of

    try:
        ns.http_restrictions = restrictions_of(ns.http_restricted_api, Door.HTTP)
        ns.grpc_restrictions = restrictions_of(ns.grpc_restricted_protocol, Door.GRPC)
    except ValueError as exc:
        raise FlagError(str(exc)) from None


def _check_ports(ns: argparse.Namespace) -> None:
    endpoints = []
    if ns.allow_http:
        endpoints.append(("HTTP", ns.http_address, ns.http_port))
    if ns.allow_grpc:
        endpoints.append(("GRPC", ns.grpc_address, ns.grpc_port))
    if ns.allow_metrics:
        endpoints.append(("metrics", ns.metrics_address, ns.metrics_port))
    for index, (kind, address, port) in enumerate(endpoints):
        for other_kind, other_address, other_port in endpoints[index + 1:]:
            # Port 0 asks for any free port: two of them never collide.
            if address == other_address and port == other_port and port != 0:
                raise FlagError(
                    f"The server cannot listen to {kind} requests and {other_kind} "
                    f"requests at the same address and port {address}:{port}"
                )


def usage(prog: str = "tritonserver") -> str:
    lines = [f"Usage: {prog} [options]", "  --help", "\tPrint usage"]
    group = ""
    for f in FLAGS:
        if f.group != group:
            group = f.group
            lines += ["", f"{group}:"]
        head = f"  --{f.name}" + (f" {f.placeholder}" if f.placeholder else "")
        text = f.help or f"accepted; no effect here: {f.effect}"
        lines += [head, f"\t{text}"]
    return "\n".join(lines)


def ignored_flag_lines(ns: argparse.Namespace) -> list[tuple[bool, str]]:
    """(is_warning, text) for each given flag that has no effect here.

    A warning where the flag asks for something it would be unsafe to drop
    silently (TLS, restricted APIs); an info line otherwise.
    """
    out = []
    for flag, value in ns.given:
        if not flag.effect:
            continue
        shown = f"--{flag.name}" + (f"={value}" if flag.parse is not None else "")
        asked = flag.parse(value) if flag.parse is not None else True
        loud = flag.warn and asked not in (flag.default, False)
        out.append((loud, f"{shown} has no effect in tritonlite: {flag.effect}"))
    return out
