"""voslab.profile: wall time per frame and peak memory growth of a block."""
from __future__ import annotations

import time

import pytest
import torch

from voslab import profile


@pytest.mark.skipif(profile.rss_bytes() is None, reason="no /proc/self/statm on this system")
def test_peak_memory_sees_a_temporary_allocation_that_is_freed_before_the_end():
    with profile.measure("cpu") as cost:
        big = torch.ones(64, 1024, 1024)      # 256 MiB, touched
        total = float(big.sum())
        del big
        time.sleep(0.01)
    assert total == 64 * 1024 * 1024
    assert 200 < cost.peak_mib < 600
    with profile.measure("cpu") as small:
        torch.ones(16)
    assert small.peak_mib < 50


def test_time_per_frame():
    with profile.measure("cpu") as cost:
        time.sleep(0.05)
    assert 0.05 <= cost.seconds < 1.0
    assert cost.per_frame_ms(10) == pytest.approx(100 * cost.seconds)
    assert cost.per_frame_ms(0) == pytest.approx(1000 * cost.seconds)  # no division by zero


def test_memory_is_none_where_it_cannot_be_read(monkeypatch):
    monkeypatch.setattr(profile, "rss_bytes", lambda: None)
    with profile.measure("cpu") as cost:
        torch.ones(16)
    assert cost.peak_mib is None and cost.seconds >= 0
