"""The uid of the process at the other end of a connection (no server)."""

from __future__ import annotations

import os
import socket

import pytest

from tests.uid_child import NOBODY, run_as
from tritonlite.core.peer_identity import (
    Peer,
    peer_of_grpc_string,
    tcp_peer_uid,
)


@pytest.mark.parametrize("family,host", [(socket.AF_INET, "127.0.0.1"),
                                         (socket.AF_INET6, "::1")])
def test_tcp_peer_uid_is_the_client_process_user(family, host):
    with socket.socket(family) as listener:
        listener.bind((host, 0))
        listener.listen()
        listener.settimeout(30)
        address = listener.getsockname()[:2]

        def client() -> int:
            sock = socket.socket(family)
            sock.connect(address)
            # Keep the connection open until the parent has looked it up.
            sock.recv(1)
            return 0

        pid = os.fork()
        if pid == 0:
            try:
                os.setgroups([])
                os.setgid(NOBODY)
                os.setuid(NOBODY)
                client()
            finally:
                os._exit(0)
        conn, _ = listener.accept()
        try:
            remote, local = conn.getpeername()[:2], conn.getsockname()[:2]
            assert tcp_peer_uid(remote, local) == NOBODY
            assert Peer(remote, local).uid() == NOBODY
            # grpc.aio tells a wildcard listening address only.
            wildcard = ("0.0.0.0" if family == socket.AF_INET else "::", local[1])
            assert tcp_peer_uid(remote, wildcard) == NOBODY
        finally:
            conn.send(b"x")
            conn.close()
            os.waitpid(pid, 0)


def test_an_ipv4_client_of_a_dual_stack_listener():
    with socket.create_server(("::", 0), family=socket.AF_INET6, dualstack_ipv6=True) as srv:
        port = srv.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port)):
            conn, peer = srv.accept()
            with conn:
                assert peer[0] == "::ffff:127.0.0.1"
                assert tcp_peer_uid(peer[:2], conn.getsockname()[:2]) == os.getuid()


def test_a_peer_on_another_host_is_unknown():
    assert tcp_peer_uid(("192.0.2.7", 40000), ("127.0.0.1", 8000)) is None
    assert Peer(("192.0.2.7", 40000), ("127.0.0.1", 8000)).uid() is None
    assert Peer(None, None).uid() is None


def test_unix_socket_peer_uid_of_a_connection_made_as_nobody():
    # An abstract socket name: no folder permissions stand between nobody and it.
    name = f"\0tritonlite-test-peercred-{os.getpid()}"
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(name)
        listener.listen()
        listener.settimeout(30)
        pid = os.fork()
        if pid == 0:
            try:
                os.setgroups([])
                os.setgid(NOBODY)
                os.setuid(NOBODY)
                sock = socket.socket(socket.AF_UNIX)
                sock.connect(name)
                sock.recv(1)
            finally:
                os._exit(0)
        conn, _ = listener.accept()
        with conn:
            peer = Peer(None, None, socket.socket(fileno=socket.dup(conn.fileno())))
            assert peer.uid() == NOBODY
            conn.send(b"x")
        os.waitpid(pid, 0)


def test_grpc_peer_strings():
    assert peer_of_grpc_string("ipv4:127.0.0.1:5000", ("0.0.0.0", 8001)).remote == (
        "127.0.0.1", 5000)
    assert peer_of_grpc_string("ipv6:[::1]:5000", ("::", 8001)).remote == ("::1", 5000)
    assert peer_of_grpc_string("unix:/tmp/x", ("0.0.0.0", 8001)) is None


def test_run_as_reports_the_childs_uid():
    assert run_as(NOBODY, os.getuid) == NOBODY
