"""pgha.cli.localcluster.free_port: ports no outgoing connection can take."""

from __future__ import annotations

import socket

from pgha.cli.localcluster import _ephemeral_range, free_port


def test_ports_lie_below_the_ephemeral_range_and_are_never_handed_out_twice() -> None:
    low, _ = _ephemeral_range()
    taken: set[int] = set()
    ports = [free_port(None, taken) for _ in range(50)]
    assert len(set(ports)) == 50 and set(ports) == taken
    assert all(10_000 <= p < low for p in ports)
    assert free_port() not in ports  # another caller in this process gets another port


def test_a_free_preferred_port_is_kept_and_a_bound_one_is_not() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", free_port()))
        listener.listen()
        busy = listener.getsockname()[1]
        assert free_port(busy) != busy
    wanted = free_port()
    assert free_port(wanted) == wanted
