"""training/bn_calibrate.py: an imported (BatchNorm-fused) model keeps its function and becomes trainable."""

from __future__ import annotations

import copy

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from training.bn_calibrate import is_fused_import, letterbox, recalibrate_batchnorm  # noqa: E402
from training.errors import TrainingError  # noqa: E402


def fused_net(seed: int = 0) -> nn.Sequential:
    """Conv + BatchNorm + SiLU twice, the BatchNorms written the way onnx_import writes them."""
    torch.manual_seed(seed)
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, bias=False),
        nn.BatchNorm2d(8),
        nn.SiLU(),
        nn.Conv2d(8, 4, 3, padding=1, bias=False),
        nn.BatchNorm2d(4),
        nn.SiLU(),
    )
    with torch.no_grad():
        for m in net:
            if isinstance(m, nn.BatchNorm2d):
                m.weight.fill_(1.0)
                m.bias.copy_(torch.randn(m.num_features) * 0.3)
                m.running_mean.zero_()
                m.running_var.fill_(1.0 - m.eps)
            elif isinstance(m, nn.Conv2d):
                m.weight.mul_(3.0)  # fused weights: outputs far from mean 0 / variance 1
    return net.eval()


def images(n: int = 6) -> list[np.ndarray]:
    rng = np.random.default_rng(1)
    return [rng.integers(0, 255, (48, 64, 3), dtype=np.uint8) for _ in range(n)]


def batch(imgs: list[np.ndarray]) -> torch.Tensor:
    return torch.from_numpy(np.stack([letterbox(im, 32) for im in imgs]))


def test_eval_function_is_unchanged_and_training_mode_now_agrees() -> None:
    net, imgs = fused_net(), images()
    x = batch(imgs)
    with torch.no_grad():
        before = net(x)
        broken = copy.deepcopy(net).train()(x)  # batch statistics on an uncalibrated import: another function
    assert is_fused_import(net)
    assert recalibrate_batchnorm(net, imgs, imgsz=32, batch=4) == 2
    assert not is_fused_import(net)
    with torch.no_grad():
        after = net(x)
        net.train()
        trained_mode = net(x)
    assert torch.allclose(after, before, atol=1e-4)
    assert (broken - before).abs().mean() > 10 * (trained_mode - before).abs().mean()
    assert torch.allclose(trained_mode, before, atol=1e-3)
    assert net.training  # the mode it was in is kept


@pytest.mark.parametrize(
    ("change", "fused"),
    [
        (None, True),
        (lambda bn: bn.running_mean.fill_(0.5), False),  # trained statistics
        (lambda bn: bn.weight.fill_(0.7), False),
        (lambda bn: bn.running_var.fill_(4.0), False),
    ],
)
def test_is_fused_import(change: object, fused: bool) -> None:
    net = fused_net()
    if change is not None:
        with torch.no_grad():
            change(net[4])  # type: ignore[operator]
    assert is_fused_import(net) is fused


def test_no_batchnorm_is_not_an_import_and_no_images_is_an_error() -> None:
    assert not is_fused_import(nn.Sequential(nn.Conv2d(3, 3, 1)))
    with pytest.raises(TrainingError, match="at least one image"):
        recalibrate_batchnorm(fused_net(), [])


@pytest.mark.parametrize(("h", "w"), [(48, 64), (64, 48), (32, 32), (10, 100)])
def test_letterbox_keeps_the_aspect_and_pads_grey(h: int, w: int) -> None:
    img = np.full((h, w, 3), 200, np.uint8)
    out = letterbox(img, 32)
    assert out.shape == (3, 32, 32) and out.dtype == np.float32
    filled = np.isclose(out[0], 200 / 255)
    assert round(filled.sum(axis=1).max()) == round(w * 32 / max(h, w))
    assert round(filled.sum(axis=0).max()) == round(h * 32 / max(h, w))
    if h != w:
        assert np.isclose(out, 114 / 255).any()
