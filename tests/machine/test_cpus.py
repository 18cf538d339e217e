"""Concurrent sweeps claim different CPUs (a claim is an flock, released with its holder)."""

from harness.machine.cpus import claim_cpus


def test_claims_are_disjoint_until_cpus_run_out_then_shared_and_released():
    a = claim_cpus(1, [0, 1])
    b = claim_cpus(1, [0, 1])
    assert (a.cpus, a.shared) == ([0], []) and (b.cpus, b.shared) == ([1], [])
    c = claim_cpus(1, [0, 1])
    assert c.cpus == [0] and c.shared == [0]  # told, not silently doubled up
    a.release()
    d = claim_cpus(2, [0, 1])
    assert d.cpus == [0, 1] and d.shared == [1]
    for claim in (b, c, d):
        claim.release()
    assert claim_cpus(2, [0, 1]).shared == []
