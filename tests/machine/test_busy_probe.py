"""The calibration's probe for a busy host: other processes' work counts, this process's own
threads (a library pool still spinning) do not, and every CPU the process may use is probed."""

from collections import namedtuple

import pytest

from harness.machine import calibrate

CpuTimes = namedtuple("CpuTimes", "user system idle iowait steal")
OwnTimes = namedtuple("OwnTimes", "user system")


@pytest.fixture
def probe(monkeypatch):
    """busy_reason over scripted counters: CPU 1 runs ``busy`` seconds of the 0.25 s pause,
    of which this process's threads ran ``own``."""
    def run(busy: float, own: float, steal: float = 0.0):
        idle = 0.25 - busy - steal
        per_cpu = iter([[CpuTimes(0, 0, 0, 0, 0)] * 2,
                        [CpuTimes(0, 0, 0.25, 0, 0), CpuTimes(busy, 0, idle, 0, steal)]])
        own_times = iter([OwnTimes(0, 0), OwnTimes(own, 0)])

        class Process:
            def cpu_times(self):
                return next(own_times)
        monkeypatch.setattr(calibrate.psutil, "cpu_times", lambda percpu: next(per_cpu))
        monkeypatch.setattr(calibrate.psutil, "Process", Process)
        monkeypatch.setattr(calibrate.time, "sleep", lambda s: None)
        monkeypatch.setattr(calibrate, "allowed_cpus", lambda: [0, 1])
        return calibrate.busy_reason(2)
    return run


def test_another_process_on_the_second_cpu_makes_the_host_busy(probe):
    assert probe(busy=0.2, own=0.0) == "CPU 1 80% busy with other work"


def test_this_process_s_own_spinning_threads_are_not_other_work(probe):
    assert probe(busy=0.2, own=0.2) is None
    assert probe(busy=0.2, own=0.1) == "CPU 1 40% busy with other work"


def test_stolen_time_makes_the_host_busy(probe):
    assert "stolen by the hypervisor" in probe(busy=0.0, own=0.0, steal=0.05)
