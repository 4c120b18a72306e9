"""/metrics on the metrics port: Triton's families, parseable, matching the stats."""

import urllib.request

import numpy as np
import tritonclient.http as httpclient
from prometheus_client.parser import text_string_to_metric_families


def _scrape(server) -> dict:
    url = f"http://127.0.0.1:{server.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as r:
        assert r.status == 200
        assert r.headers["Content-Type"] == "text/plain; charset=utf-8"
        text = r.read().decode()
    families = {}
    for fam in text_string_to_metric_families(text):
        families[fam.name] = fam
    return families


def _value(fam, **labels) -> float:
    for s in fam.samples:
        if all(s.labels.get(k) == v for k, v in labels.items()):
            return s.value
    raise KeyError(labels)


def test_metrics_match_statistics(server):
    client = httpclient.InferenceServerClient(server.url)
    x = np.ones(5, np.float32)
    inp = httpclient.InferInput("INPUT0", [5], "FP32")
    inp.set_data_from_numpy(x)
    for _ in range(3):
        client.infer("identity_fp32", [inp])
    one = httpclient.InferInput("INPUT0", [1], "FP32")
    one.set_data_from_numpy(np.ones(1, np.float32))
    try:
        client.infer("raises", [one])
    except Exception:
        pass
    fams = _scrape(server)
    for name in (
        "nv_inference_request_success", "nv_inference_request_failure", "nv_inference_count",
        "nv_inference_exec_count", "nv_inference_request_duration_us",
        "nv_inference_queue_duration_us", "nv_inference_compute_input_duration_us",
        "nv_inference_compute_infer_duration_us", "nv_inference_compute_output_duration_us",
        "nv_inference_pending_request_count", "nv_cpu_utilization", "nv_cpu_memory_total_bytes",
        "nv_cpu_memory_used_bytes",
    ):
        assert name in fams, name
    assert fams["nv_inference_request_success"].type == "counter"
    assert fams["nv_inference_pending_request_count"].type == "gauge"
    stats = client.get_inference_statistics("identity_fp32")["model_stats"][0]
    inf = stats["inference_stats"]
    lab = {"model": "identity_fp32", "version": "1"}
    assert _value(fams["nv_inference_request_success"], **lab) == inf["success"]["count"]
    assert _value(fams["nv_inference_count"], **lab) == stats["inference_count"]
    assert _value(fams["nv_inference_exec_count"], **lab) == stats["execution_count"]
    assert _value(fams["nv_inference_queue_duration_us"], **lab) == inf["queue"]["ns"] // 1000
    assert (
        _value(fams["nv_inference_compute_infer_duration_us"], **lab)
        == inf["compute_infer"]["ns"] // 1000
    )
    raised = client.get_inference_statistics("raises")["model_stats"][0]
    assert (
        _value(fams["nv_inference_request_failure"], model="raises", reason="BACKEND")
        == raised["inference_stats"]["fail"]["count"]
        >= 1
    )
    assert fams["nv_cpu_memory_total_bytes"].samples[0].value > 0


def test_other_paths_on_metrics_port(server):
    with urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/", timeout=10) as r:
        assert r.status == 200 and r.read() == b""
