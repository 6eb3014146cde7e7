"""The clients' send buffer set once on the listening socket (``bound_listeners``): every
socket the kernel accepts from it has that buffer, locked against autotuning, without a
system call per connection."""

from __future__ import annotations

import socket

from gateway.streaming import bound_listeners


def _accepted(listener: socket.socket) -> tuple[socket.socket, socket.socket]:
    client = socket.create_connection(listener.getsockname())
    accepted, _ = listener.accept()
    return client, accepted


def test_an_accepted_socket_has_the_listeners_send_buffer() -> None:
    with socket.socket() as plain, socket.socket() as bounded:
        for s in (plain, bounded):
            s.bind(("127.0.0.1", 0))
            s.listen()
        assert bound_listeners([bounded], 64 * 1024)
        c1, a1 = _accepted(plain)
        c2, a2 = _accepted(bounded)
        try:
            default = a1.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
            got = a2.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
            # Linux doubles what it is given (its bookkeeping overhead).
            assert got == 2 * 64 * 1024
            assert got != default
        finally:
            for s in (c1, a1, c2, a2):
                s.close()


def test_no_listener_or_one_that_refuses_leaves_it_to_each_connection() -> None:
    assert not bound_listeners([], 64 * 1024)
    closed = socket.socket()
    closed.close()
    assert not bound_listeners([closed], 64 * 1024)
