"""voslab.utils: BatchNorm calibration."""
from __future__ import annotations

import torch
from torch import nn

from voslab.utils import calibrate_batchnorm


def test_calibrate_batchnorm_measures_statistics_without_changing_weights():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4))
    net[1].running_mean.fill_(5.0)                          # stale statistics to be replaced
    weights = {k: v.clone() for k, v in net.state_dict().items() if "running" not in k and "num_batches" not in k}
    images = 3 + 2 * torch.randn(6, 3, 8, 8)
    assert calibrate_batchnorm(net, images) is net and not net.training
    with torch.no_grad():
        conv = net[0](images)                                # (6, 4, 8, 8)
    torch.testing.assert_close(net[1].running_mean, conv.mean((0, 2, 3)))
    torch.testing.assert_close(net[1].running_var, conv.var((0, 2, 3), unbiased=True))
    for k, v in weights.items():
        torch.testing.assert_close(net.state_dict()[k], v)


def test_calibrate_batchnorm_runs_the_given_forward():
    net = nn.Sequential(nn.BatchNorm2d(3), nn.Conv2d(3, 1, 1))
    calls = []
    calibrate_batchnorm(net, torch.ones(2, 3, 4, 4), forward=lambda x: calls.append(net[0](x)))
    assert len(calls) == 1 and torch.equal(net[0].running_mean, torch.ones(3))
