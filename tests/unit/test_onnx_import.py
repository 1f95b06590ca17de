"""training/onnx_import.py: dequantising ultralytics int8 ONNX initializers into fp32 conv weights."""

from __future__ import annotations

import numpy as np
import pytest

from training.errors import TrainingError
from training.onnx_import import _labels, dequantised_weights


@pytest.mark.parametrize(
    ("q", "scale", "zero", "expected"),
    [
        ([0, 128, 255], 0.5, 128, [-64.0, 0.0, 63.5]),
        ([10, 20], 0.1, 0, [1.0, 2.0]),
        ([141, 141], 0.12432925, 141, [0.0, 0.0]),
    ],
)
def test_int8_weight_is_dequantised(q: list[int], scale: float, zero: int, expected: list[float]) -> None:
    inits = {
        "model.0.conv.weight_quantized": np.array(q, dtype=np.uint8),
        "model.0.conv.weight_scale": np.array(scale, dtype=np.float32),
        "model.0.conv.weight_zero_point": np.array(zero, dtype=np.uint8),
        "model.0.conv.bias": np.array([1.5], dtype=np.float32),
    }
    out = dequantised_weights(inits)
    assert set(out) == {"model.0.conv.weight", "model.0.conv.bias"}
    np.testing.assert_allclose(out["model.0.conv.weight"], expected, rtol=1e-6)
    assert out["model.0.conv.weight"].dtype == np.float32


def test_fp32_weights_pass_through_and_graph_constants_are_ignored() -> None:
    inits = {
        "model.3.conv.weight": np.ones((2, 2), dtype=np.float32),
        "model.3.conv.bias": np.zeros(2, dtype=np.float32),
        "/model.22/Constant_output_0": np.ones(3, dtype=np.float32),
        "onnx::Split_137": np.array([1, 2], dtype=np.int64),
    }
    assert sorted(dequantised_weights(inits)) == ["model.3.conv.bias", "model.3.conv.weight"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("car=vehicle,bus=vehicle", {"car": "vehicle", "bus": "vehicle"}),
        ("cart=vendor, ", {"cart": "vendor"}),
        ("car", TrainingError),
        ("car=automobile", TrainingError),
    ],
)
def test_rule_label_option(text: str, expected: object) -> None:
    if expected is TrainingError:
        with pytest.raises(TrainingError):
            _labels(text)
    else:
        assert _labels(text) == expected
