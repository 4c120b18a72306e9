"""HTTP-only request errors: JSON and binary framing, body limits.

Errors every door shares (unknown model, validation, model failures) are
rows of tests/test_door_tables.py.
"""

import json

import pytest

from tests.http_raw import call

A16 = [1.0] * 16


def _infer(server, body, model="add_sub", headers=None, path=None):
    status, hdrs, data = call(
        server.url, "POST", path or f"/v2/models/{model}/infer", body, headers
    )
    return status, json.loads(data)["error"] if status != 200 else json.loads(data)


def _inputs(**overrides):
    i0 = {"name": "INPUT0", "datatype": "FP32", "shape": [16], "data": A16}
    i1 = {"name": "INPUT1", "datatype": "FP32", "shape": [16], "data": A16}
    i0.update(overrides)
    return {"inputs": [i0, i1]}


@pytest.mark.parametrize(
    "body,needle",
    [
        (b"{not json", "failed to parse the request JSON buffer"),
        (b"[1, 2]", "Unable to parse 'inputs': attempt to access non-existing object member"),
        (b"{}", "Unable to parse 'inputs': attempt to access non-existing object member"),
        (b'{"inputs": 5}', "Unable to parse 'inputs': attempt to access JSON non-array as array"),
        (
            b'{"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [16]}]}',
            "Input must set only one of the following fields",
        ),
        (b'{"inputs": [{"datatype": "FP32", "shape": [1], "data": [1]}]}',
         "Unable to parse 'name': attempt to access non-existing object member 'name'"),
        (b'{"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": ["a"], "data": [1]}]}',
         "Unable to parse 'shape': attempt to access JSON non-unsigned-integer as "
         "unsigned-integer"),
    ],
)
def test_malformed_json(server, body, needle):
    status, err = _infer(server, body)
    assert status == 400
    assert needle in err


def test_data_length_does_not_match_shape(server):
    status, err = _infer(server, _inputs(data=[1.0] * 15))
    assert status == 400
    assert err == "Unable to parse 'data': Shape does not match true shape of 'data' field"


def test_binary_sizes_that_do_not_add_up(server):
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "INPUT0",
                    "datatype": "FP32",
                    "shape": [16],
                    "parameters": {"binary_data_size": 64},
                },
                {
                    "name": "INPUT1",
                    "datatype": "FP32",
                    "shape": [16],
                    "parameters": {"binary_data_size": 64},
                },
            ]
        }
    ).encode()
    hl = {"Inference-Header-Content-Length": str(len(header))}
    # Too few bytes after the header.
    status, err = _infer(server, header + b"\0" * 100, headers=hl)
    assert status == 400
    assert err == (
        "unexpected size for input 'INPUT1', expecting 28 additional bytes for model 'add_sub'"
    )
    # Too many bytes after the header.
    status, err = _infer(server, header + b"\0" * 130, headers=hl)
    assert (status, err) == (400, "unexpected additional input data for model 'add_sub'")
    # The header length points past the end of the body.
    status, err = _infer(
        server, header, headers={"Inference-Header-Content-Length": str(len(header) + 5)}
    )
    assert status == 400
    assert (
        err
        == f"inference header size should be in range (0, {len(header)}), got: {len(header) + 5}"
    )
    # Right total, but a tensor's binary size disagrees with its shape.
    bad = header.replace(b'"binary_data_size": 64}}, {', b'"binary_data_size": 60}}, {', 1)
    bad = bad.replace(b'"binary_data_size": 64}}]', b'"binary_data_size": 68}}]')
    status, err = _infer(
        server, bad + b"\0" * 128, headers={"Inference-Header-Content-Length": str(len(bad))}
    )
    assert status == 400
    assert err == (
        "[request id: <id_unknown>] input byte size mismatch for input 'INPUT0' for model "
        "'add_sub'. Expected 64, got 60"
    )


def test_limits_are_checked_before_allocation(tmp_path):
    from tests.conftest import EXAMPLES
    from tests.server_harness import ServerProcess

    srv = ServerProcess(
        [EXAMPLES],
        "--max-request-bytes",
        "4096",
        "--max-tensor-dims",
        "4",
        "--max-tensor-elements",
        "100000",
    )
    try:
        status, err = _infer(srv, b"{" + b" " * 5000 + b"}")
        assert status == 400 and "limit of 4096 bytes" in err
        body = {
            "inputs": [{"name": "INPUT0", "datatype": "BYTES", "shape": [1] * 5, "data": ["a"]}]
        }
        status, err = _infer(srv, body, model="identity_bytes")
        assert status == 400 and "5 dimensions" in err
        body = {"inputs": [{"name": "INPUT0", "datatype": "BYTES", "shape": [10**9], "data": []}]}
        status, err = _infer(srv, body, model="identity_bytes")
        assert status == 400 and "1000000000 elements" in err
    finally:
        assert srv.stop() == 0
