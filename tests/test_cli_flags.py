"""tritonserver's command line: every flag, its value syntax and its errors.

The flag list below is tritonserver 2.51's (`tritonserver --help`) plus the
later releases' flags named in issue 10; the expected texts are what the
reference binary prints. No server runs here except where noted.
"""

import os
import subprocess
import sys

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from tests.conftest import EXAMPLES
from tests.server_harness import ROOT, ServerProcess
from tritonlite.command_line import (
    FLAGS,
    FlagError,
    ignored_flag_lines,
    parse_command_line,
    usage,
)

# tritonserver 2.51's flags with a sample value of their kind (None: no value).
TRITON_251_FLAGS = {
    "id": "edge-1", "exit-timeout-secs": "5",
    "log-verbose": "1", "log-info": "false", "log-warning": "false", "log-error": "false",
    "log-format": "ISO8601", "log-file": "/tmp/x.log",
    "model-store": "/m", "model-repository": "/m", "exit-on-error": "false",
    "disable-auto-complete-config": None, "strict-readiness": "false",
    "model-control-mode": "explicit", "repository-poll-secs": "5", "load-model": "a",
    "model-config-name": "h100", "model-load-thread-count": "2",
    "model-load-retry-count": "1", "model-namespacing": "false", "enable-peer-access": "false",
    "allow-http": "true", "http-address": "127.0.0.1", "http-port": "9000",
    "reuse-http-port": "false", "http-header-forward-pattern": "x-.*",
    "http-thread-count": "4", "http-restricted-api": "model-repository:admin=secret",
    "allow-grpc": "true", "grpc-address": "127.0.0.1", "grpc-port": "9001",
    "reuse-grpc-port": "false", "grpc-header-forward-pattern": "x-.*",
    "grpc-infer-allocation-pool-size": "16", "grpc-use-ssl": "false",
    "grpc-use-ssl-mutual": "false", "grpc-server-cert": "c.pem", "grpc-server-key": "k.pem",
    "grpc-root-cert": "r.pem", "grpc-infer-response-compression-level": "high",
    "grpc-keepalive-time": "1000", "grpc-keepalive-timeout": "500",
    "grpc-keepalive-permit-without-calls": "true", "grpc-http2-max-pings-without-data": "0",
    "grpc-http2-min-recv-ping-interval-without-data": "1000",
    "grpc-http2-max-ping-strikes": "0", "grpc-max-connection-age": "60000",
    "grpc-max-connection-age-grace": "1000",
    "grpc-restricted-protocol": "health,metadata:key=value",
    "allow-sagemaker": "false", "sagemaker-port": "8080",
    "sagemaker-safe-port-range": "8000-8010", "sagemaker-thread-count": "8",
    "allow-vertex-ai": "false", "vertex-ai-port": "8080", "vertex-ai-thread-count": "8",
    "vertex-ai-default-model": "m",
    "allow-metrics": "true", "allow-gpu-metrics": "false", "allow-cpu-metrics": "true",
    "metrics-address": "127.0.0.1", "metrics-port": "9002", "metrics-interval-ms": "500",
    "metrics-config": "summary_latencies=true",
    "trace-config": "triton,file=/tmp/trace.json",
    "backend-directory": "/opt/tritonserver/backends",
    "backend-config": "python,shm-default-byte-size=5242880",
    "repoagent-directory": "/opt/tritonserver/repoagents",
    "cache-config": "local,size=1048576", "cache-directory": "/opt/tritonserver/caches",
    "rate-limit": "execution_count", "rate-limit-resource": "R1:4:0",
    "pinned-memory-pool-byte-size": "268435456", "cuda-memory-pool-byte-size": "0:67108864",
    "cuda-virtual-address-size": "0:1073741824", "min-supported-compute-capability": "7.5",
    "buffer-manager-thread-count": "2", "host-policy": "gpu0,numa-node=0",
    "model-load-gpu-limit": "0:0.5",
    "strict-model-config": "false", "response-cache-byte-size": "1048576",
    "trace-file": "/tmp/t.json", "trace-level": "TIMESTAMPS", "trace-rate": "100",
    "trace-count": "10", "trace-log-frequency": "50",
}
LATER_FLAGS = {
    "allow-client-shm": "true", "http-max-input-size": "1048576",
    "grpc-infer-thread-count": "4", "grpc-max-response-pool-size": "8",
}
NEEDS = {"load-model": ["--model-control-mode=explicit"]}


def parse(*argv):
    return parse_command_line(["--model-repository=/m", *argv])


@pytest.mark.parametrize("name", sorted({**TRITON_251_FLAGS, **LATER_FLAGS}))
def test_every_flag_is_accepted_in_both_forms(name):
    value = {**TRITON_251_FLAGS, **LATER_FLAGS}[name]
    before = NEEDS.get(name, [])
    if value is None:
        forms = [[f"--{name}"]]
    else:
        forms = [[f"--{name}={value}"], [f"--{name}", value]]
    results = [parse(*before, *form) for form in forms]
    assert all(r.given[-1][0].name == name for r in results)
    assert len({repr(vars(r)[r.given[-1][0].dest]) for r in results}) == 1


def test_flag_table_has_no_names_beyond_the_lists_and_tritonlites_own():
    ours = {"http-server", "grpc-server", "max-request-bytes", "max-request-inputs",
            "max-tensor-dims", "max-tensor-elements", "shm-arena-bytes",
            "grpc-http2-max-concurrent-streams", "grpc-http2-settings-timeout",
            "grpc-http2-send-timeout", "grpc-http2-max-unsent-bytes",
            "http-max-connections", "http-keepalive-timeout", "http-header-timeout",
            "http-body-timeout", "http-send-timeout", "http-max-url-bytes",
            "http-max-header-bytes", "http-max-headers", "frontend-processes",
            "tenant-config", "shm-max-regions", "shm-max-regions-per-client",
            "shm-batch-in-place"}
    assert {f.name for f in FLAGS} == set(TRITON_251_FLAGS) | set(LATER_FLAGS) | ours


def test_values_become_what_the_server_uses():
    ns = parse(
        "--model-store", "/n", "--model-repository=/m", "--http-port", "9000",
        "--log-verbose=true", "--log-info=OFF", "--log-format", "ISO8601",
        "--exit-on-error", "0", "--model-control-mode=EXPLICIT", "--load-model=a",
        "--load-model", "b", "--rate-limit-resource=R1:4", "--rate-limit-resource=R2:2:1",
        "--backend-config=python,shm-default-byte-size=1024", "--backend-config=global=1",
        "--id=edge", "--http-max-input-size=4096", "--exit-timeout-secs=-3",
        "--backend-directory=/b", "--model-config-name=h100",
    )
    assert ns.model_repository == ["/m", "/n"]
    assert (ns.http_port, ns.log_verbose, ns.log_info, ns.log_format) == (9000, 1, False, "ISO8601")
    assert ns.exit_on_error is False and ns.model_control_mode == "explicit"
    assert ns.load_model == ["a", "b"]
    assert ns.rate_limit_resource == [("R1", 4, -1), ("R2", 2, 1)]
    assert ns.backend_config == [("python", "shm-default-byte-size", "1024"), ("", "global", "1")]
    assert (ns.id, ns.http_max_input_size, ns.exit_timeout_secs) == ("edge", 4096, -3)
    assert (ns.backend_directory, ns.model_config_name) == ("/b", "h100")
    assert ns.metrics_address == ns.http_address == "0.0.0.0"  # metrics follow HTTP's address


def test_numbers_and_booleans_read_as_tritonserver_reads_them():
    # std::stoi reads a leading number and ignores the rest.
    assert parse("--http-port=9000abc").http_port == 9000
    assert parse("--http-port= +12").http_port == 12
    for text in ("true", "On", "1", "TRUE"):
        assert parse(f"--allow-grpc={text}").allow_grpc is True
    for text in ("false", "OFF", "0"):
        assert parse(f"--allow-grpc={text}").allow_grpc is False
    assert parse("--log-verbose=FALSE").log_verbose == 0
    assert parse("--log-verbose=3").log_verbose == 3
    assert parse("--min-supported-compute-capability=7.5x").min_supported_compute_capability == 7.5


@pytest.mark.parametrize(
    "argv, text",
    [
        (["--foo=1"], "tritonserver: unrecognized option '--foo=1'"),
        (["--http-port"], "tritonserver: option '--http-port' requires an argument"),
        (["--disable-auto-complete-config=1"],
         "tritonserver: option '--disable-auto-complete-config' doesn't allow an argument"),
        (["-h"], "tritonserver: invalid option -- 'h'"),
        (["stray"], "Unexpected argument: stray"),
        (["--log-verbose=abc"], 'Bad option: "--log-verbose".\nInvalid option value. Got abc'),
        (["--http-port=99999999999"],
         'Bad option: "--http-port".\nProvided option value is out of bound. Got 99999999999'),
        (["--exit-on-error=yes"],
         'Bad option: "--exit-on-error".\ninvalid value for bool option: yes'),
        (["--log-format=iso8601"],
         'Bad option: "--log-format".\ninvalid argument for --log-format'),
        (["--model-control-mode=sometimes"],
         'Bad option: "--model-control-mode".\ninvalid argument for --model-control-mode'),
        (["--model-config-name="],
         'Bad option: "--model-config-name".\nError: empty argument for --model-config-name'),
        (["--backend-config=,a=b"],
         'Bad option: "--backend-config".\nNo backend specified. --backend-config option format '
         "is <backend name>,<setting>=<value> or <setting>=<value>. Got ,a=b"),
        (["--backend-config=python"],
         'Bad option: "--backend-config".\n--backend-config option format is '
         "'<backend name>,<setting>=<value>'. Got python"),
        (["--rate-limit-resource=R1"],
         'Bad option: "--rate-limit-resource".\n--rate-limit-resource option format is '
         "'<resource_name>:<count>:<device>' or '<resource_name>:<count>'. Got R1"),
        (["--load-model=a"],
         "Error: Use of '--load-model' requires setting '--model-control-mode=explicit' as well."),
        (["--response-cache-byte-size=1", "--cache-config=local,size=1"],
         "Error: Incompatible flags --response-cache-byte-size and --cache-config both provided. "
         "Please provide one or the other."),
        (["--http-port=9000", "--grpc-port=9000"],
         "The server cannot listen to HTTP requests and GRPC requests at the same address and "
         "port 0.0.0.0:9000"),
    ],
)
def test_errors_are_tritonservers(argv, text):
    with pytest.raises(FlagError) as caught:
        parse(*argv)
    assert str(caught.value) == text


def test_unambiguous_prefixes_work_and_ambiguous_ones_list_the_choices():
    assert parse("--model-repo=/x").model_repository == ["/m", "/x"]
    assert parse("--exit-on=false").exit_on_error is False
    with pytest.raises(FlagError) as caught:
        parse("--model=x")
    text = str(caught.value)
    assert text.startswith("tritonserver: option '--model' is ambiguous; possibilities: ")
    # --model-store and --model-repository are one option: named once.
    assert "'--model-store'" in text and "'--model-repository'" not in text
    assert "'--model-control-mode'" in text


def test_flags_without_meaning_here_get_one_line_each():
    ns = parse("--http-thread-count=4", "--grpc-use-ssl=true", "--grpc-use-ssl=false",
               "--model-namespacing=true", "--http-port=9000")
    lines = ignored_flag_lines(ns)
    assert lines == [
        (False, "--http-thread-count=4 has no effect in tritonlite: one event loop serves HTTP"),
        (True, "--grpc-use-ssl=true has no effect in tritonlite: TLS is not supported: gRPC is "
               "served as cleartext HTTP/2"),
        (False, "--grpc-use-ssl=false has no effect in tritonlite: TLS is not supported: gRPC "
                "is served as cleartext HTTP/2"),
        (True, "--model-namespacing=true has no effect in tritonlite: model names are global "
               "across repositories"),
    ]


def test_disable_auto_complete_config_wins_over_strict_model_config(capsys):
    ns = parse("--strict-model-config=false", "--disable-auto-complete-config")
    assert ns.strict_model_config is True
    err = capsys.readouterr().err
    assert "Warning: '--strict-model-config' has been deprecated!" in err
    assert "Overriding deprecated '--strict-model-config' from False to True" in err


def test_usage_lists_every_flag():
    text = usage()
    for flag in FLAGS:
        assert f"  --{flag.name}" in text


def _tritonlite(*argv):
    return subprocess.run(
        [sys.executable, "-m", "tritonlite", "serve", *argv],
        capture_output=True, text=True, timeout=60, env=dict(os.environ, PYTHONPATH=ROOT),
    )


def test_bad_flags_and_no_repository_exit_1_with_the_text():
    proc = _tritonlite("--model-repository=/m", "--not-a-flag")
    assert proc.returncode == 1
    assert "tritonlite serve: unrecognized option '--not-a-flag'" in proc.stderr
    proc = _tritonlite("--http-port=1")
    assert proc.returncode == 1
    assert proc.stderr.strip().endswith(
        "error: creating server: Invalid argument - --model-repository must be specified"
    )
    proc = _tritonlite("--help")
    assert proc.returncode == 0 and "--backend-config" in proc.stdout


def _tritonserver_script() -> str:
    path = os.path.join(os.path.dirname(sys.executable), "tritonserver")
    assert os.path.isfile(path), f"{path} missing: reinstall the package (pyproject scripts)"
    return path


def test_the_seed_launch_line_runs_with_the_tritonserver_command(tmp_path):
    # The line from the seed's Jetson guide, unchanged, plus this test's ports.
    seed = [
        f"--model-repository={EXAMPLES}",
        f"--backend-directory={tmp_path}",
        "--backend-config=tensorflow,version=2",
    ]
    srv = ServerProcess([], *seed, command=[_tritonserver_script()])
    try:
        client = httpclient.InferenceServerClient(srv.url)
        assert client.is_server_ready()
        x = np.arange(16, dtype=np.float32)
        inputs = [httpclient.InferInput(n, [16], "FP32") for n in ("INPUT0", "INPUT1")]
        for i in inputs:
            i.set_data_from_numpy(x)
        result = client.infer("add_sub", inputs)
        np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), x + x)
    finally:
        assert srv.stop() == 0, srv.log()
    log = srv.log()
    assert log.count("--backend-config=tensorflow,version=2 has no effect in tritonlite") == 1


def test_id_and_http_max_input_size_take_effect():
    srv = ServerProcess([EXAMPLES], "--id=edge-box-7", "--http-max-input-size", "4096")
    try:
        client = httpclient.InferenceServerClient(srv.url)
        assert client.get_server_metadata()["name"] == "edge-box-7"
        meta = grpcclient.InferenceServerClient(srv.grpc_url).get_server_metadata()
        assert meta.name == "edge-box-7"
        small = httpclient.InferInput("INPUT0", [4], "BYTES")
        small.set_data_from_numpy(np.array([b"abc"] * 4, dtype=object))
        assert client.infer("identity_bytes", [small]).as_numpy("OUTPUT0")[0] == b"abc"
        big = httpclient.InferInput("INPUT0", [4], "BYTES")
        big.set_data_from_numpy(np.array([b"x" * 2000] * 4, dtype=object))
        with pytest.raises(InferenceServerException) as caught:
            client.infer("identity_bytes", [big])
        assert caught.value.status() == "400"  # refused before the body is read
    finally:
        assert srv.stop() == 0, srv.log()


IDENTITY = """
import triton_python_backend_utils as pb_utils

class TritonPythonModel:
    def execute(self, requests):
        return [pb_utils.InferenceResponse([pb_utils.Tensor("OUTPUT0",
                pb_utils.get_input_tensor_by_name(r, "INPUT0").as_numpy())]) for r in requests]
"""


def _identity_model(repo, name, config_files):
    os.makedirs(os.path.join(repo, name, "1"))
    with open(os.path.join(repo, name, "1", "model.py"), "w") as f:
        f.write(IDENTITY)
    for rel, max_batch in config_files.items():
        path = os.path.join(repo, name, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(
                f'backend: "python"\nmax_batch_size: {max_batch}\n'
                'input [{ name: "INPUT0" data_type: TYPE_FP32 dims: [2] }]\n'
                'output [{ name: "OUTPUT0" data_type: TYPE_FP32 dims: [2] }]\n'
            )


def test_model_config_name_picks_configs_name_pbtxt_where_it_exists(tmp_path):
    repo = str(tmp_path)
    _identity_model(repo, "custom", {"config.pbtxt": 0, "configs/h100.pbtxt": 8,
                                     "configs/v100.pbtxt": 2})
    _identity_model(repo, "default_only", {"config.pbtxt": 4})
    srv = ServerProcess([repo], "--model-config-name=h100")
    try:
        client = httpclient.InferenceServerClient(srv.url)
        assert client.get_model_config("custom")["max_batch_size"] == 8
        assert client.get_model_config("default_only")["max_batch_size"] == 4
    finally:
        assert srv.stop() == 0, srv.log()


def test_configuration_doc_lists_every_flag():
    with open(os.path.join(ROOT, "docs", "configuration.md")) as f:
        doc = f.read()
    missing = [flag.name for flag in FLAGS if f"`--{flag.name}" not in doc]
    assert not missing
