"""PortPool: the even RTP ports of [media] port_range (RTCP on the odd port above), handed out
oldest-free first, taken back for reuse at once (DESIGN.md "Symmetric RTP")."""

from __future__ import annotations

import pytest

from gateway.media.ports import PortPool, PortsExhausted


def drain(pool: PortPool) -> list[int]:
    out = []
    while pool.free:
        out.append(pool.allocate())
    return out


def test_even_ports_only_with_rtcp_pair_inside_the_range() -> None:
    pool = PortPool(20000, 20009)
    ports = drain(pool)
    assert ports == [20000, 20002, 20004, 20006, 20008]
    assert all(p % 2 == 0 for p in ports)
    assert all(20000 <= p and p + 1 <= 20009 for p in ports)


def test_even_last_port_has_no_rtcp_partner_so_it_is_not_used() -> None:
    pool = PortPool(20000, 20004)
    # 20004 would need 20005 for RTCP, which is outside the range
    assert drain(pool) == [20000, 20002]
    assert pool.size == 2


@pytest.mark.parametrize(
    ("first", "last", "pairs"),
    [(20000, 20001, 1), (20000, 20003, 2), (20000, 20004, 2), (20000, 20005, 3),
     (10000, 19999, 5000), (65534, 65535, 1), (2, 3, 1)],
)
def test_size_is_the_number_of_pairs(first: int, last: int, pairs: int) -> None:
    pool = PortPool(first, last)
    assert pool.size == pairs == (last - first + 1) // 2
    assert pool.free == pairs
    assert pool.used == 0


def test_odd_first_port_is_rounded_up() -> None:
    pool = PortPool(20001, 20007)
    assert pool.first == 20002
    assert pool.last == 20007
    assert drain(pool) == [20002, 20004, 20006]


@pytest.mark.parametrize(
    ("first", "last"),
    [(20000, 20000), (20001, 20002), (0, 100), (20010, 20000), (65534, 65536), (-2, 10)],
)
def test_range_without_a_pair_is_refused(first: int, last: int) -> None:
    with pytest.raises(ValueError, match="holds no RTP/RTCP pair"):
        PortPool(first, last)


def test_size_free_used_follow_allocation_and_release() -> None:
    pool = PortPool(30000, 30007)  # 4 pairs
    assert (pool.size, pool.free, pool.used) == (4, 4, 0)
    a = pool.allocate()
    b = pool.allocate()
    assert (pool.size, pool.free, pool.used) == (4, 2, 2)
    pool.release(a)
    assert (pool.size, pool.free, pool.used) == (4, 3, 1)
    pool.release(b)
    assert (pool.size, pool.free, pool.used) == (4, 4, 0)


def test_released_port_goes_to_the_back_of_the_queue() -> None:
    pool = PortPool(30000, 30007)
    a = pool.allocate()
    assert a == 30000
    pool.release(a)
    # the ports free for longer come first, then the one just released
    assert [pool.allocate() for _ in range(4)] == [30002, 30004, 30006, 30000]


def test_fifo_reuse_order_of_several_releases() -> None:
    pool = PortPool(30000, 30005)  # 3 pairs
    ports = drain(pool)
    assert ports == [30000, 30002, 30004]
    pool.release(30004)
    pool.release(30000)
    pool.release(30002)
    assert [pool.allocate() for _ in range(3)] == [30004, 30000, 30002]


def test_released_port_is_usable_at_once_when_it_is_the_only_one() -> None:
    pool = PortPool(30000, 30001)
    port = pool.allocate()
    with pytest.raises(PortsExhausted):
        pool.allocate()
    pool.release(port)
    assert pool.allocate() == port


def test_exhaustion_raises_with_a_message_and_changes_nothing() -> None:
    pool = PortPool(30000, 30003)
    drain(pool)
    with pytest.raises(PortsExhausted, match=r"all 2 RTP port pairs of 30000-30003 are in use"):
        pool.allocate()
    assert (pool.size, pool.free, pool.used) == (2, 0, 2)
    with pytest.raises(PortsExhausted):
        pool.allocate()


def test_ports_exhausted_is_not_a_value_error() -> None:
    # the SIP layer maps it to 503, distinct from SdpError (a ValueError) -> 488
    assert not issubclass(PortsExhausted, ValueError)


@pytest.mark.parametrize("port", [12345, 30001, 30002, 40000, 0, -1])
def test_release_of_an_unknown_port_is_ignored(port: int) -> None:
    pool = PortPool(30000, 30005)
    first = pool.allocate()  # 30000 in use; 30002 and 30004 free
    pool.release(port)
    assert (pool.free, pool.used) == (2, 1)
    # a free port released again must not be queued twice
    assert [pool.allocate(), pool.allocate()] == [30002, 30004]
    with pytest.raises(PortsExhausted):
        pool.allocate()
    assert first == 30000


def test_double_release_counts_once() -> None:
    pool = PortPool(30000, 30003)
    port = pool.allocate()
    pool.release(port)
    pool.release(port)
    assert (pool.size, pool.free, pool.used) == (2, 2, 0)
    assert drain(pool) == [30002, 30000]


def test_no_port_is_handed_out_twice_while_in_use() -> None:
    pool = PortPool(40000, 40199)
    seen: set[int] = set()
    for round_ in range(3):
        taken = drain(pool)
        assert len(taken) == len(set(taken)) == 100
        seen.update(taken)
        for port in taken[round_::2]:
            pool.release(port)
        for port in taken:
            pool.release(port)
    assert seen == set(range(40000, 40200, 2))
