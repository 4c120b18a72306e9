"""The worker's end of its channel: adaptive polling for the next batch
(workers/channel_dispatch.py), over a real socket pair, no server."""

from __future__ import annotations

import threading
import time

import pytest
from tritonlite.shm.arena import SegmentCache
from tritonlite.workers import channel, messages
from tritonlite.workers.channel_dispatch import ChannelEndpoint
from tritonlite.workers.messages import Shutdown


@pytest.fixture
def pair(monkeypatch):
    monkeypatch.setenv("TRITONLITE_WORKER_SPIN_US", "1000000")  # a 1 s budget
    ours, peer = channel.socket_pair()
    endpoint = ChannelEndpoint(ours, SegmentCache(), on_release=lambda _blocks: None)
    yield endpoint, peer
    ours.close()
    peer.close()


def _send_shutdown(peer) -> None:
    channel.send(peer, messages.encode(Shutdown()))


def test_polls_only_after_a_quick_request(pair):
    endpoint, peer = pair
    assert not endpoint._spin_next  # nothing answered yet: the first receive sleeps
    endpoint.answered()
    _send_shutdown(peer)  # well within the 1 s budget of the answer
    assert isinstance(endpoint.next_work(), Shutdown)
    assert endpoint._spin_next
    endpoint._answered_at = time.monotonic() - 2.0  # an answer 2 s ago: a slow caller
    _send_shutdown(peer)
    assert isinstance(endpoint.next_work(), Shutdown)
    assert not endpoint._spin_next


def test_polling_ends_when_the_message_arrives(pair):
    """With polling on and a 1 s budget, a message sent 50 ms after the answer
    is taken when it arrives (a poll that missed it would wait out the budget)."""
    endpoint, peer = pair
    endpoint._spin_next = True
    endpoint.answered()
    sender = threading.Timer(0.05, _send_shutdown, args=(peer,))
    t0 = time.monotonic()
    sender.start()
    try:
        assert isinstance(endpoint.next_work(), Shutdown)
    finally:
        sender.join()
    assert time.monotonic() - t0 < 0.9


def test_budget_zero_turns_polling_off(monkeypatch):
    monkeypatch.setenv("TRITONLITE_WORKER_SPIN_US", "0")
    ours, peer = channel.socket_pair()
    try:
        endpoint = ChannelEndpoint(ours, SegmentCache(), on_release=lambda _blocks: None)
        endpoint.answered()
        _send_shutdown(peer)
        assert isinstance(endpoint.next_work(), Shutdown)
        assert not endpoint._spin_next
        assert endpoint._poller is None
    finally:
        ours.close()
        peer.close()
