"""The two networks: sizes as the authors', shapes, gradients, determinism, axis semantics."""
import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from inference.axes import IN_PLANE_KERNEL, THROUGH_PLANE_KERNEL
from inference.networks import (
    CoarseConfig,
    CoarseUNet,
    ContextBlock,
    EfficientSegNet,
    FineConfig,
    count_multiply_adds,
    count_parameters,
    main,
)

AUTHORS = {"coarse": (2_676_480, 1.0019e11), "fine": (9_366_016, 3.5766e11)}


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def test_sizes_match_the_authors_models(capsys):
    assert main([]) == 0
    report = json.loads(capsys.readouterr().out)
    assert set(report) == {"coarse", "fine"}
    for name, (params, macs) in AUTHORS.items():
        assert abs(report[name]["parameters"] - params) <= 0.01 * params
        assert abs(report[name]["multiply_adds"] - macs) <= 0.03 * macs
    assert report["coarse"]["input_size"] == [160, 160, 160]
    assert report["fine"]["input_size"] == [192, 192, 192]
    assert report["coarse"]["parameters"] == 2_676_480 and report["fine"]["parameters"] == 9_366_016


def test_counts_follow_the_configuration():
    small = CoarseUNet(CoarseConfig(widths=(4, 8, 16, 32, 64)))
    assert count_parameters(small) < count_parameters(CoarseUNet()) / 3
    # Multiply-adds scale with the number of voxels: half the side, an eighth of the work.
    full = count_multiply_adds(EfficientSegNet(), (192, 192, 192))
    half = count_multiply_adds(EfficientSegNet(), (96, 96, 96))
    assert half == pytest.approx(full / 8, rel=0.02)


@pytest.mark.parametrize("make,shape", [
    (lambda: CoarseUNet(CoarseConfig(out_channels=3)), (2, 1, 32, 48, 16)),
    (lambda: EfficientSegNet(FineConfig(out_channels=5)), (1, 1, 128, 64, 32)),
    (lambda: EfficientSegNet(FineConfig(widths=(8, 16, 32, 64, 128), context_width=16)), (2, 1, 64, 32, 32)),
])
def test_output_shape(make, shape):
    model = make().eval()
    with torch.inference_mode():
        out = model(torch.randn(shape))
    assert out.shape == (shape[0], model.config.out_channels, *shape[2:])
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("make,shape", [
    (CoarseUNet, (1, 1, 32, 32, 32)),
    (lambda: EfficientSegNet(FineConfig(widths=(8, 16, 32, 64, 128), context_width=16)), (1, 1, 128, 64, 32)),
])
def test_backward_reaches_every_parameter(make, shape):
    model = make().train()
    out = model(torch.randn(shape))
    target = (torch.rand_like(out) > 0.5).float()
    F.binary_cross_entropy_with_logits(out, target).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("make,shape", [(CoarseUNet, (1, 1, 32, 32, 32)),
                                        (EfficientSegNet, (1, 1, 64, 64, 32))])
def test_eval_mode_is_deterministic(make, shape):
    model = make().eval()
    x = torch.randn(shape)
    with torch.inference_mode():
        assert torch.equal(model(x), model(x))
    model.train()
    with torch.no_grad():
        assert not torch.equal(model(x), model(x))  # dropout is active in training


def test_wrong_input_sides_are_refused():
    with pytest.raises(ValueError, match="divisible by 16"):
        CoarseUNet()(torch.zeros(1, 1, 40, 32, 32))
    with pytest.raises(ValueError, match="divisible by 16"):
        EfficientSegNet()(torch.zeros(1, 2, 32, 32, 32))
    with pytest.raises(ValueError, match="not all 16"):
        EfficientSegNet()(torch.zeros(1, 1, 16, 16, 16))


def test_strip_and_pyramid_pooling_equal_fixed_kernels_at_the_papers_size():
    """At 192^3 the bottom feature map is 12^3 (192/16): the authors' fixed kernels were 12."""
    block = ContextBlock(channels=32, width=8).eval()
    x = torch.randn(2, 8, 12, 12, 12)
    n = 12
    with torch.no_grad():
        fixed = [nn.AvgPool3d((1, n, n)), nn.AvgPool3d((n, 1, n)), nn.AvgPool3d((n, n, 1))]
        expected = sum(F.interpolate(conv(pool(x)), size=x.shape[2:], mode="trilinear", align_corners=True)
                       for conv, pool in zip(block.strips, fixed))
        torch.testing.assert_close(block.strip_branch(x), expected, rtol=1e-4, atol=1e-5)
        expected = block.pyramid[0](x) + sum(
            F.interpolate(conv(nn.AvgPool3d(k)(x)), size=x.shape[2:], mode="trilinear", align_corners=True)
            for conv, k in zip(block.pyramid[1:], (2, 4)))
        torch.testing.assert_close(block.pyramid_branch(x), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("size", [(12, 12, 12), (10, 6, 4), (3, 1, 2), (1, 1, 2)])
def test_context_block_accepts_any_bottom_size(size):
    block = ContextBlock(channels=32, width=8).eval()
    with torch.no_grad():
        assert block(torch.randn(1, 32, *size)).shape == (1, 32, *size)


def test_fine_network_accepts_every_multiple_of_16():
    model = EfficientSegNet(FineConfig(widths=(4, 8, 8, 8, 8), context_width=4)).eval()
    with torch.inference_mode():
        for size in ((32, 16, 16), (96, 32, 48), (64, 80, 16)):
            assert model(torch.randn(1, 1, *size)).shape == (1, 4, *size)


def test_anisotropic_convolutions_act_in_plane_and_across_slices():
    """With tensors (batch, channel, x, y, z), the decoder's 3x3x1 conv mixes only within an
    axial slice (x, y) and the 1x1x3 conv only across slices (z)."""
    level = EfficientSegNet().decoder[0]
    in_plane = level.block.main[0][0]
    through_plane = level.block.main[1]
    assert tuple(in_plane.kernel_size) == IN_PLANE_KERNEL == (3, 3, 1)
    assert tuple(through_plane.kernel_size) == THROUGH_PLANE_KERNEL == (1, 1, 3)
    impulse = torch.zeros(1, in_plane.in_channels, 9, 9, 9)
    impulse[0, :, 4, 4, 4] = 1
    with torch.no_grad():
        reach_in_plane = in_plane(impulse).abs().sum(dim=(0, 1)).nonzero()
        reach_through = through_plane(impulse).abs().sum(dim=(0, 1)).nonzero()
    assert set(reach_in_plane[:, 2].tolist()) == {4}  # same slice only
    assert set(reach_in_plane[:, 0].tolist()) == {3, 4, 5} and set(reach_in_plane[:, 1].tolist()) == {3, 4, 5}
    assert set(reach_through[:, 2].tolist()) == {3, 4, 5}  # across slices
    assert set(reach_through[:, 0].tolist()) == {4} and set(reach_through[:, 1].tolist()) == {4}
