"""GlobalConv, Refine and ASPP against hand-written compositions."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from voslab.nn.modules import ASPP, GlobalConv, Refine


def test_global_conv_is_sum_of_two_separable_branches():
    torch.manual_seed(0)
    block = GlobalConv(3, 4, kernel_size=5, mid_channels=2)
    x = torch.randn(2, 3, 9, 11)

    def branch(x, first, second):
        return F.conv2d(F.conv2d(x, first.weight, first.bias, padding=first.padding), second.weight, second.bias, padding=second.padding)

    assert block.left[0].weight.shape[-2:] == (5, 1) and block.left[1].weight.shape[-2:] == (1, 5)
    assert block.right[0].weight.shape[-2:] == (1, 5) and block.right[1].weight.shape[-2:] == (5, 1)
    expected = branch(x, *block.left) + branch(x, *block.right)
    torch.testing.assert_close(block(x), expected)
    assert block(x).shape == (2, 4, 9, 11)
    # receptive field: an impulse reaches exactly a 5x5 neighbourhood (generic weights)
    impulse = torch.zeros(1, 3, 9, 11)
    impulse[0, :, 4, 5] = 1
    response = (block(impulse) - block(torch.zeros_like(impulse))).abs().sum(1)[0]
    outside = torch.ones_like(response, dtype=torch.bool)
    outside[2:7, 3:8] = False
    assert (response[2:7, 3:8] > 0).all() and (response[outside] == 0).all()  # exact zeros, no float-sum order
    with pytest.raises(ValueError, match="odd"):
        GlobalConv(3, 4, kernel_size=4)


def test_refine_matches_its_definition():
    torch.manual_seed(0)
    block = Refine(5, 4)
    skip, coarse = torch.randn(2, 5, 8, 10), torch.randn(2, 4, 4, 5)

    def res(block, x):
        return x + block.conv2(F.relu(block.conv1(F.relu(x))))

    s = res(block.resFS, block.convFS(skip))
    expected = res(block.resMM, s + F.interpolate(coarse, size=(8, 10), mode="bilinear", align_corners=False))
    torch.testing.assert_close(block(skip, coarse), expected)


def test_aspp_shapes_and_branches():
    torch.manual_seed(0)
    aspp = ASPP(6, 8, rates=(1, 2), mid_channels=4).eval()
    x = torch.randn(2, 6, 7, 9)
    assert aspp(x).shape == (2, 8, 7, 9)
    assert len(aspp.branches) == 4  # 1x1, two atrous, image pooling
    assert [b[0].dilation for b in aspp.branches[1:3]] == [(1, 1), (2, 2)]
    # the image-pooling branch is constant over space
    pooled = aspp.branches[3](x)
    assert torch.allclose(pooled, pooled[:, :, :1, :1].expand_as(pooled))
    aspp.train()
    assert aspp(x[:1]).shape == (1, 8, 7, 9)  # batch of one trains (no BN error on 1x1 pooled map)
