"""The core's request checks without a server (request_validation_protos.py),
run in a subprocess: our `protos` cannot share a process with
`tritonclient.grpc`, which other tests import."""

import subprocess
import sys

from tests.server_harness import ROOT


def test_request_validation_in_a_protos_process():
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         "tests/request_validation_protos.py"],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-2000:]
    assert " passed" in proc.stdout and "failed" not in proc.stdout
