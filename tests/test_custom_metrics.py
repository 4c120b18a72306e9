"""Custom metrics (pb_utils.MetricFamily / Metric) on the metrics port.

A Python model makes counter, gauge and histogram families; their series
show on /metrics in Prometheus' text format with Triton's rules: same-name
families of one kind are shared (the first description stays), another kind
is refused, labels and bucket boundaries are checked, a metric whose family
object is gone refuses every operation and leaves /metrics. Updates travel
in batches, yet a scrape and value() see every update made before them.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from prometheus_client.parser import text_string_to_metric_families
from tritonlite.workers.messages import MetricOps, MetricReply
from tritonlite.workers.metrics_client import MetricRefused, MetricsClient
from tritonlite.workers.worker_link import PendingCall

from tests.server_harness import ServerProcess
from tritonlite.custom_metrics import (
    ADD,
    COUNTER,
    DROP_FAMILY,
    FAMILY,
    GAUGE,
    GET,
    HISTOGRAM,
    METRIC,
    OBSERVE,
    SET,
    TRITON_FAMILIES,
    CustomMetricRegistry,
    format_number,
)

# Runs a list of actions sent as JSON; answers one result per action:
# ["ok", value] or [exception class name, message].
SCRIPTED = '''
import json, os, threading, time, urllib.request
import numpy as np
import triton_python_backend_utils as pb_utils

KINDS = {"counter": pb_utils.MetricFamily.COUNTER, "gauge": pb_utils.MetricFamily.GAUGE,
         "histogram": pb_utils.MetricFamily.HISTOGRAM}


class TritonPythonModel:
    def initialize(self, args):
        self.families = {}
        self.metrics = {}

    def _do(self, action):
        op = action[0]
        if op == "family":
            self.families[action[1]] = pb_utils.MetricFamily(
                name=action[1], description=action[2], kind=KINDS[action[3]])
        elif op == "metric":
            family = self.families[action[1]]
            metric = family.Metric(labels=action[2], buckets=action[3])
            self.metrics[action[4]] = metric
        elif op == "drop_family":
            del self.families[action[1]]
        elif op == "inc":
            self.metrics[action[1]].increment(action[2])
        elif op == "inc_many":
            for _ in range(action[2]):
                self.metrics[action[1]].increment(1)
        elif op == "set":
            self.metrics[action[1]].set(action[2])
        elif op == "observe":
            self.metrics[action[1]].observe(action[2])
        elif op == "value":
            return self.metrics[action[1]].value()
        elif op == "scrape":
            url = "http://127.0.0.1:%d/metrics" % action[1]
            with urllib.request.urlopen(url, timeout=10) as reply:
                text = reply.read().decode()
            return [line for line in text.splitlines() if line.startswith(action[2])]
        elif op == "inc_later":  # from a thread of the model's, after execute returned
            metric, path = self.metrics[action[1]], action[3]
            def later():
                time.sleep(0.2)
                metric.increment(action[2])
                open(path, "w").close()
            threading.Thread(target=later, daemon=True).start()
        return None

    def execute(self, requests):
        responses = []
        for request in requests:
            raw = pb_utils.get_input_tensor_by_name(request, "ACTIONS").as_numpy()[0]
            results = []
            for action in json.loads(raw):
                try:
                    results.append(["ok", self._do(action)])
                except Exception as exc:
                    results.append([type(exc).__name__, str(exc)])
            out = np.array([json.dumps(results).encode()], dtype=object)
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("RESULTS", out)]))
        return responses
'''
CONFIG = """backend: "python"
max_batch_size: 0
input [{ name: "ACTIONS" data_type: TYPE_STRING dims: [1] }]
output [{ name: "RESULTS" data_type: TYPE_STRING dims: [1] }]
instance_group [{ count: 1, kind: KIND_CPU }]
"""
MODELS = ("alpha", "beta", "gamma")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    root = Path(tmp_path_factory.mktemp("custom_metrics")) / "models"
    for name in MODELS:
        (root / name / "1").mkdir(parents=True)
        (root / name / "config.pbtxt").write_text(CONFIG)
        (root / name / "1" / "model.py").write_text(SCRIPTED)
    srv = ServerProcess([str(root)], "--model-control-mode=explicit",
                        *(f"--load-model={m}" for m in MODELS))
    yield srv
    srv.stop()


def _http(srv: ServerProcess, model: str, actions: list) -> list:
    client = httpclient.InferenceServerClient(srv.url)
    x = httpclient.InferInput("ACTIONS", [1], "BYTES")
    x.set_data_from_numpy(np.array([json.dumps(actions).encode()], dtype=object))
    return json.loads(client.infer(model, [x]).as_numpy("RESULTS")[0])


def _grpc(srv: ServerProcess, model: str, actions: list) -> list:
    client = grpcclient.InferenceServerClient(srv.grpc_url)
    x = grpcclient.InferInput("ACTIONS", [1], "BYTES")
    x.set_data_from_numpy(np.array([json.dumps(actions).encode()], dtype=object))
    return json.loads(client.infer(model, [x]).as_numpy("RESULTS")[0])


def _ok(results: list) -> list:
    assert all(r[0] == "ok" for r in results), results
    return [r[1] for r in results]


def _text(srv: ServerProcess) -> str:
    url = f"http://127.0.0.1:{srv.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as reply:
        return reply.read().decode()


def _lines(srv: ServerProcess, prefix: str) -> list[str]:
    return [ln for ln in _text(srv).splitlines() if ln.startswith(prefix)
            or ln.startswith(f"# HELP {prefix}") or ln.startswith(f"# TYPE {prefix}")]


@pytest.mark.parametrize("door", [_http, _grpc])
def test_counter_gauge_and_histogram_on_the_metrics_port(server, door) -> None:
    tag = door.__name__.strip("_")
    c, g, h = f"{tag}_requests", f"{tag}_temperature", f"{tag}_latency"
    values = _ok(door(server, "alpha", [
        ["family", c, "Requests seen", "counter"],
        ["metric", c, {"route": "a", "kind": "x"}, None, "c"],
        ["inc", "c", 2023.0], ["inc", "c", 0.5], ["value", "c"],
        ["family", g, "Board temperature", "gauge"],
        ["metric", g, None, None, "g"],
        ["set", "g", 40.0], ["inc", "g", -2.5], ["value", "g"],
        ["family", h, "Latency", "histogram"],
        ["metric", h, {"route": "a"}, [0.1, 1, 2.5], "h"],
        ["observe", "h", 0.05], ["observe", "h", 1.0], ["observe", "h", 7.5],
    ]))
    assert values[4] == 2023.5 and values[9] == 37.5
    assert _lines(server, c) == [
        f"# HELP {c} Requests seen", f"# TYPE {c} counter",
        f'{c}{{kind="x",route="a"}} 2023.5',
    ]
    assert _lines(server, g) == [
        f"# HELP {g} Board temperature", f"# TYPE {g} gauge", f"{g} 37.5",
    ]
    assert _lines(server, h) == [
        f"# HELP {h} Latency", f"# TYPE {h} histogram",
        # 16 significant digits, as the reference writes 0.05 + 1.0 + 7.5.
        f'{h}_count{{route="a"}} 3', f'{h}_sum{{route="a"}} 8.550000000000001',
        f'{h}_bucket{{route="a",le="0.1"}} 1', f'{h}_bucket{{route="a",le="1"}} 2',
        f'{h}_bucket{{route="a",le="2.5"}} 2', f'{h}_bucket{{route="a",le="+Inf"}} 3',
    ]
    # The whole exposition stays parseable, with the custom families in it.
    families = {f.name: f for f in text_string_to_metric_families(_text(server))}
    assert families[c].type == "counter" and families[h].type == "histogram"


def test_a_scrape_during_execute_sees_the_updates_made_before_it(server) -> None:
    got = _ok(_grpc(server, "alpha", [
        ["family", "inside_counter", "d", "counter"],
        ["metric", "inside_counter", {}, None, "m"],
        ["inc_many", "m", 500],
        ["scrape", server.metrics_port, "inside_counter"],
    ]))
    assert got[3] == ["inside_counter 500"]


def test_value_and_scrape_see_what_another_model_still_holds(server, tmp_path: Path) -> None:
    # beta and alpha hold the same series (same family name and labels).
    for model in ("alpha", "beta"):
        _ok(_http(server, model, [
            ["family", "shared_total", "d", "counter"],
            ["metric", "shared_total", {"site": "s"}, None, "s"],
        ]))
    done = tmp_path / "beta-incremented"
    _ok(_http(server, "beta", [["inc", "s", 5], ["inc_later", "s", 7, str(done)]]))
    deadline = time.monotonic() + 60
    while not done.exists():
        assert time.monotonic() < deadline, "the model's thread never ran"
        time.sleep(0.02)
    # beta's last update waits in beta's worker: value() and a scrape fetch it.
    assert _ok(_http(server, "alpha", [["inc", "s", 1], ["value", "s"]]))[1] == 13
    assert _lines(server, "shared_total{") == ['shared_total{site="s"} 13']


def test_tritons_rules_for_families_metrics_and_their_lifetime(server) -> None:
    prefix = "Failed to process the request for model 'gamma_0_0', message: "
    results = _grpc(server, "gamma", [
        ["family", "rules_family", "first description", "counter"],
        ["family", "rules_family", "second description", "gauge"],
        ["family", "nv_inference_count", "Triton's own", "gauge"],
        ["family", "bad-name", "d", "counter"],
        ["metric", "rules_family", {"bad-label": "x"}, None, "x"],
        ["metric", "rules_family", {"n": 1}, None, "x"],
        ["metric", "rules_family", {}, [1.0], "x"],
        ["family", "rules_hist", "h", "histogram"],
        ["metric", "rules_hist", {}, None, "x"],
        ["metric", "rules_hist", {}, [1.0, 1.0], "x"],
        ["metric", "rules_hist", {}, [2.0, 1.0], "x"],
        ["metric", "rules_family", {"n": "1"}, None, "kept"],
        ["inc", "kept", -1],
        ["set", "kept", 1],
        ["observe", "kept", 1],
    ])
    different = prefix + "Family name already exists with different type"
    assert results == [
        ["ok", None],
        ["TritonModelException", "Error when creating MetricFamily: " + different],
        ["TritonModelException", "Error when creating MetricFamily: " + different],
        ["TritonModelException",
         "Error when creating MetricFamily: " + prefix + "Invalid metric name"],
        ["TritonModelException", "Error when creating Metric: " + prefix + "Invalid label name"],
        ["TritonModelException", "Error when creating Metric: " + prefix
         + "attempt to access JSON non-string as string"],
        ["TritonModelException", "Failed to create metric. Unexpected buckets found."],
        ["ok", None],
        ["TritonModelException", "Failed to create metric. Missing required buckets."],
        ["TritonModelException", "Error when creating Metric: " + prefix
         + "Bucket Boundaries must be strictly sorted"],
        ["TritonModelException", "Error when creating Metric: " + prefix
         + "Bucket Boundaries must be strictly sorted"],
        ["ok", None],
        ["TritonModelException", "Failed to increment metric value: " + prefix
         + "TRITONSERVER_METRIC_KIND_COUNTER can only be incremented monotonically by "
         "non-negative values."],
        ["TritonModelException", "Failed to set metric value: " + prefix
         + "TRITONSERVER_METRIC_KIND_COUNTER does not support Set"],
        ["TritonModelException", "Failed to observe metric value: " + prefix
         + "TRITONSERVER_METRIC_KIND_COUNTER does not support Observe"],
    ]
    # Same name and kind from another model: shared, the first description stays.
    _ok(_http(server, "beta", [
        ["family", "rules_family", "second description", "counter"],
        ["metric", "rules_family", {"n": "1"}, None, "same"],
        ["inc", "same", 4],
    ]))
    assert _lines(server, "rules_family") == [
        "# HELP rules_family first description", "# TYPE rules_family counter",
        'rules_family{n="1"} 4',
    ]
    # gamma's family object goes: its metric refuses, the series stays for beta.
    cleared = (
        "Invalid metric operation as the corresponding 'MetricFamily' has been deleted. "
        "The 'MetricFamily' object should be deleted AFTER its corresponding 'Metric' "
        "objects have been deleted."
    )
    assert _grpc(server, "gamma", [["drop_family", "rules_family"], ["inc", "kept", 1],
                                   ["value", "kept"]]) == [
        ["ok", None],
        ["TritonModelException", "Failed to increment metric value: " + cleared],
        ["TritonModelException", "Failed to get metric value: " + cleared],
    ]
    assert _lines(server, "rules_family{") == ['rules_family{n="1"} 4']
    # beta's goes too: nothing holds the series, the family is not listed.
    _ok(_http(server, "beta", [["drop_family", "rules_family"]]))
    assert _lines(server, "rules_family") == []


def test_a_series_can_join_one_of_tritons_families(server) -> None:
    _ok(_grpc(server, "alpha", [
        ["family", "nv_inference_count", "ignored", "counter"],
        ["metric", "nv_inference_count", {"model": "outside", "version": "9"}, None, "n"],
        ["inc", "n", 3],
    ]))
    families = {f.name: f for f in text_string_to_metric_families(_text(server))}
    samples = [s for s in families["nv_inference_count"].samples
               if s.labels.get("model") == "outside"]
    assert [(s.labels["version"], s.value) for s in samples] == [("9", 3.0)]


def test_tritons_own_families_are_reserved_with_their_kinds(server) -> None:
    # A custom family can clash with every family the port shows, by kind.
    own = {f.name: f.type for f in text_string_to_metric_families(_text(server))
           if f.name.startswith("nv_")}
    assert own and {name: TRITON_FAMILIES.get(name) for name in own} == {
        name: {"counter": COUNTER, "gauge": GAUGE}[kind] for name, kind in own.items()
    }


def test_unloading_a_model_takes_its_series_away(server) -> None:
    _ok(_http(server, "gamma", [
        ["family", "gamma_only", "d", "gauge"],
        ["metric", "gamma_only", {}, None, "g"],
        ["set", "g", 1.25],
    ]))
    assert _lines(server, "gamma_only") == [
        "# HELP gamma_only d", "# TYPE gamma_only gauge", "gamma_only 1.25"
    ]
    client = httpclient.InferenceServerClient(server.url)
    client.unload_model("gamma")
    deadline = time.monotonic() + 60
    while _lines(server, "gamma_only"):
        assert time.monotonic() < deadline, _lines(server, "gamma_only")
        time.sleep(0.05)
    client.load_model("gamma")


TENANT_HEADER = "tenant-token"
TENANTS = {
    "token_header": TENANT_HEADER,
    "tenants": [
        {"name": "alpha", "token": "alpha-token-metrics-0123",
         "models": {"infer": ["alpha_*"]}, "categories": ["inference", "statistics"]},
        {"name": "beta", "token": "beta-token-metrics-01234",
         "models": {"infer": ["beta_*"]}, "categories": ["inference", "statistics"]},
    ],
}


def test_tenants_and_several_frontend_processes(tmp_path: Path) -> None:
    """With tenants a scrape shows the custom series of the scraping tenant's
    models only; with --frontend-processes 2 requests land on either process
    (a new connection each) and the one metrics port, in the main process
    beside the models' workers, counts every update."""
    root = tmp_path / "models"
    for name in ("alpha_m", "beta_m"):
        (root / name / "1").mkdir(parents=True)
        (root / name / "config.pbtxt").write_text(CONFIG)
        (root / name / "1" / "model.py").write_text(SCRIPTED)
    config = tmp_path / "tenants.json"
    config.write_text(json.dumps(TENANTS))
    srv = ServerProcess([str(root)], "--tenant-config", str(config), "--frontend-processes=2")
    alpha, beta = ({TENANT_HEADER: t["token"]} for t in TENANTS["tenants"])

    def infer(model: str, token: dict, actions: list) -> list:
        client = httpclient.InferenceServerClient(srv.url)  # a new connection each time
        x = httpclient.InferInput("ACTIONS", [1], "BYTES")
        x.set_data_from_numpy(np.array([json.dumps(actions).encode()], dtype=object))
        try:
            reply = client.infer(model, [x], headers=token)
        finally:
            client.close()
        return _ok(json.loads(reply.as_numpy("RESULTS")[0]))

    def scrape(token: dict) -> tuple[int, list[str]]:
        request = urllib.request.Request(f"http://127.0.0.1:{srv.metrics_port}/metrics",
                                         headers=token)
        try:
            with urllib.request.urlopen(request, timeout=10) as reply:
                return reply.status, [ln for ln in reply.read().decode().splitlines()
                                      if "jobs" in ln]
        except urllib.error.HTTPError as exc:
            return exc.code, []

    try:
        for model, token, who in (("alpha_m", alpha, "a"), ("beta_m", beta, "b")):
            infer(model, token, [
                ["family", "tenant_jobs", f"jobs of {who}", "counter"],
                ["metric", "tenant_jobs", {"who": who}, None, "j"],
                ["family", f"only_{who}_jobs", "own", "gauge"],
                ["metric", f"only_{who}_jobs", {}, None, "o"],
                ["set", "o", 7.0],
            ])
        for _ in range(6):
            infer("alpha_m", alpha, [["inc", "j", 1]])
        for _ in range(4):
            infer("beta_m", beta, [["inc", "j", 2]])
        assert scrape(alpha) == (200, [
            "# HELP tenant_jobs jobs of a", "# TYPE tenant_jobs counter",
            'tenant_jobs{who="a"} 6',
            "# HELP only_a_jobs own", "# TYPE only_a_jobs gauge", "only_a_jobs 7",
        ])
        # The shared family keeps its first description; beta sees only its series.
        assert scrape(beta) == (200, [
            "# HELP tenant_jobs jobs of a", "# TYPE tenant_jobs counter",
            'tenant_jobs{who="b"} 8',
            "# HELP only_b_jobs own", "# TYPE only_b_jobs gauge", "only_b_jobs 7",
        ])
        assert scrape({}) == (403, [])  # no credentials: refused, as every scrape
    finally:
        srv.stop()


# -- the registry, without a server -----------------------------------------------


def test_registry_shares_families_and_series_by_name_and_labels() -> None:
    registry = CustomMetricRegistry()
    a, b = object(), object()
    assert registry.apply(a, [[FAMILY, 1, "jobs", "first", COUNTER]]).error == ""
    assert registry.apply(b, [[FAMILY, 1, "jobs", "second", COUNTER]]).error == ""
    registry.apply(a, [[METRIC, 2, 1, {"q": "x"}, None], [ADD, 2, 1.5]])
    registry.apply(b, [[METRIC, 2, 1, {"q": "x"}, None], [ADD, 2, 2.0]])
    assert registry.apply(a, [[GET, 2]]).value == 3.5
    assert registry.other_holders(a, 2) == [b]
    assert registry.render() == ["# HELP jobs first", "# TYPE jobs counter", 'jobs{q="x"} 3.5']
    registry.apply(a, [[DROP_FAMILY, 1]])
    assert registry.render()[-1] == 'jobs{q="x"} 3.5'  # b still holds it
    registry.release(b)
    assert registry.render() == []
    assert registry.owners() == []


def test_registry_lists_only_the_series_of_owners_shown() -> None:
    registry = CustomMetricRegistry()
    a, b = "model_a", "model_b"
    registry.apply(a, [[FAMILY, 1, "jobs", "d", COUNTER], [METRIC, 2, 1, {"q": "a"}, None],
                       [ADD, 2, 1.0], [FAMILY, 3, "tenant_x", "d", GAUGE],
                       [METRIC, 4, 3, {}, None], [SET, 4, 2.0, 0.0]])
    registry.apply(b, [[FAMILY, 1, "jobs", "d", COUNTER], [METRIC, 2, 1, {"q": "b"}, None],
                       [ADD, 2, 5.0], [METRIC, 3, 1, {"q": "a"}, None]])
    held_by_b = registry.held_by(lambda owner: owner == b)
    # b holds q="a" too (same labels): it is b's to see.
    assert registry.render(held_by_b) == [
        "# HELP jobs d", "# TYPE jobs counter", 'jobs{q="a"} 1', 'jobs{q="b"} 5'
    ]
    assert registry.render(registry.held_by(lambda owner: False)) == []
    # A family already on the page (skip) gets no second HELP/TYPE from render.
    assert registry.render(skip={"jobs"}) == [
        "# HELP tenant_x d", "# TYPE tenant_x gauge", "tenant_x 2"
    ]


def test_registry_histograms_keep_their_first_buckets() -> None:
    registry = CustomMetricRegistry()
    registry.apply(1, [[FAMILY, 1, "lat", "d", HISTOGRAM]])
    answer = registry.apply(1, [[METRIC, 2, 1, {}, [1.0, 5.0]]])
    assert answer.buckets == [1.0, 5.0]
    assert registry.apply(1, [[METRIC, 3, 1, {}, [2.0]]]).buckets == [1.0, 5.0]
    registry.apply(1, [[OBSERVE, 2, [1, 0, 2], 21.5, 3]])
    assert registry.series_lines("lat") == [
        "lat_count 3", "lat_sum 21.5", 'lat_bucket{le="1"} 1', 'lat_bucket{le="5"} 1',
        'lat_bucket{le="+Inf"} 3',
    ]


def test_registry_checks_kinds_names_labels_and_buckets() -> None:
    registry = CustomMetricRegistry()
    assert registry.apply(1, [[FAMILY, 1, "nv_cpu_utilization", "d", COUNTER]]).error == (
        "Family name already exists with different type"
    )
    assert TRITON_FAMILIES["nv_cpu_utilization"] == GAUGE
    for name in ("", "__x", "9a", "a-b"):
        assert registry.apply(1, [[FAMILY, 1, name, "d", COUNTER]]).error == (
            "Invalid metric name"
        ), name
    assert registry.apply(1, [[FAMILY, 1, "ns:ok_name", "d", GAUGE]]).error == ""
    for labels, error in (({"__r": "x"}, "Invalid label name"), ({"a:b": "x"},
                          "Invalid label name"), ({"a": None},
                          "attempt to access JSON non-string as string")):
        assert registry.apply(1, [[METRIC, 2, 1, labels, None]]).error == error
    assert registry.apply(1, [[FAMILY, 3, "h", "d", HISTOGRAM]]).error == ""
    assert registry.apply(1, [[METRIC, 4, 3, {}, [0.5, 0.5]]]).error == (
        "Bucket Boundaries must be strictly sorted"
    )
    assert registry.apply(1, [[METRIC, 4, 3, {}, []]]).error == ""


def test_numbers_are_written_as_prometheus_cpp_writes_them() -> None:
    cases = {2023.0: "2023", -2023.0: "-2023", 0.1 + 0.2: "0.3", 1e20: "1e+20",
             1e-7: "1e-07", 1 / 3: "0.3333333333333333", float("nan"): "Nan",
             float("inf"): "+Inf", float("-inf"): "-Inf"}
    for value, text in cases.items():
        assert format_number(value) == text


def test_help_and_label_values_are_escaped() -> None:
    registry = CustomMetricRegistry()
    registry.apply(1, [[FAMILY, 1, "esc", 'two\nlines \\ "q"', GAUGE],
                       [METRIC, 2, 1, {"v": 'a"b\\c\nd'}, None], [SET, 2, 1.0, 0.0]])
    assert registry.render() == [
        '# HELP esc two\\nlines \\\\ "q"', "# TYPE esc gauge", 'esc{v="a\\"b\\\\c\\nd"} 1'
    ]


# -- the worker's client, without a server ----------------------------------------


class _RecordingLink:
    """A WorkerLink that answers calls from a registry and records every message."""

    def __init__(self) -> None:
        self.registry = CustomMetricRegistry()
        self.sent: list[MetricOps] = []

    def send(self, msg: object, fds: list[int] | None = None) -> None:
        assert isinstance(msg, MetricOps)
        self.sent.append(msg)
        self.registry.apply(self, msg.ops)

    def call(self, make):
        msg = make(len(self.sent) + 1)
        self.sent.append(msg)
        answer = self.registry.apply(self, msg.ops)
        pending = PendingCall()
        pending.put(MetricReply(msg.call_id, answer.error, answer.value, answer.buckets))
        return pending


def test_updates_are_batched_and_coalesced_until_flushed_or_read() -> None:
    link = _RecordingLink()
    client = MetricsClient(link, "m_0_0")
    family = client.create_family("ops", "d", GAUGE)
    gauge = client.create_metric(family, {}, None)
    hist_family = client.create_family("hist", "d", HISTOGRAM)
    hist = client.create_metric(hist_family, {}, [1.0, 10.0])
    assert len(link.sent) == 4  # the calls, one each
    for _ in range(1000):
        client.add(gauge, 1.0)
    client.set(gauge, 5.0)
    client.add(gauge, 2.0)
    for value in (0.5, 3.0, 3.0, 99.0):
        client.observe(hist, value)
    assert len(link.sent) == 4  # updates cost no message
    client.flush()
    assert len(link.sent) == 5
    assert link.sent[-1].ops == [[SET, gauge, 5.0, 2.0], [OBSERVE, hist, [1, 2, 1], 105.5, 4]]
    client.flush()  # nothing pending: nothing sent
    assert len(link.sent) == 5
    client.add(gauge, 1.0)
    assert client.value(gauge) == 8.0  # the pending update rides with the read
    assert len(link.sent) == 6 and link.sent[-1].ops == [[ADD, gauge, 1.0], [GET, gauge]]
    client.flush(pull_id=7)  # the server asked: an answer even when empty
    assert link.sent[-1].pull_id == 7 and link.sent[-1].ops == []
    with pytest.raises(MetricRefused) as refused:
        client.create_family("ops", "d", COUNTER)
    assert refused.value.text == (
        "Failed to process the request for model 'm_0_0', message: Family name already "
        "exists with different type"
    )
