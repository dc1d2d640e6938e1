"""The supervisor↔child message pipe (prs_mpi.pipe): framing, big messages, end of stream."""
import socket
import threading

import pytest

from prs_mpi.pipe import Pipe


def pair():
    a, b = socket.socketpair()
    return Pipe(a.detach()), Pipe(b.detach())


def test_messages_small_and_large_arrive_whole_and_in_order():
    left, right = pair()
    big = bytes(range(256)) * 40_000                         # 10 MB: more than a socket buffer
    sender = threading.Thread(target=lambda: [left.send(m) for m in (("run", [1, 2]), big, None)])
    sender.start()
    assert right.recv() == ("run", [1, 2])
    assert right.recv() == big
    assert right.recv() is None
    sender.join()
    assert not right.poll(0)


def test_poll_wakes_on_data_and_recv_ends_when_the_other_side_closes():
    left, right = pair()
    assert right.poll(0.01) is False
    left.send("x")
    assert right.poll(5.0) is True and right.recv() == "x"
    left.close()
    assert left.closed and right.poll(5.0) is True             # end of stream reads as readable
    with pytest.raises(EOFError):
        right.recv()
    with pytest.raises(OSError):
        left.send("after close")
