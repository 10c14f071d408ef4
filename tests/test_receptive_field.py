"""utils.receptive_field (chapter 06): the computed receptive field size, jump and start of every
layer agree with the receptive field measured with gradients on real conv stacks (stride,
dilation, padding, max and average pooling), and bad input fails clearly."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from utils.receptive_field import (
    LayerRF,
    LayerSpec,
    empirical_receptive_field,
    format_table,
    layer_specs,
    receptive_field,
)


def _positive_linear(model: nn.Module) -> nn.Module:
    """Positive weights and no non-linearity: every pixel of the receptive field gets a positive gradient."""
    torch.manual_seed(0)
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Conv1d)):
            nn.init.uniform_(m.weight, 0.1, 1.0)
    return model


STACKS = {
    "plain 3x3": lambda: nn.Sequential(nn.Conv2d(1, 2, 3), nn.Conv2d(2, 2, 3), nn.Conv2d(2, 1, 3)),
    "stride and padding": lambda: nn.Sequential(
        nn.Conv2d(1, 2, 5, stride=2, padding=2),
        nn.Conv2d(2, 2, 3, stride=2, padding=1),
        nn.Conv2d(2, 1, 3, padding=1),
    ),
    "dilation": lambda: nn.Sequential(
        nn.Conv2d(1, 2, 3, dilation=1),
        nn.Conv2d(2, 2, 3, dilation=2, padding=2),
        nn.Conv2d(2, 1, 3, dilation=4, padding=4),
    ),
    "avg pooling": lambda: nn.Sequential(
        nn.Conv2d(1, 2, 3, padding=1),
        nn.AvgPool2d(2),
        nn.Conv2d(2, 2, 3, padding=1),
        nn.AvgPool2d(3, stride=2, padding=1),
        nn.Conv2d(2, 1, 3),
    ),
    "non-square": lambda: nn.Sequential(
        nn.Conv2d(1, 2, (3, 5), stride=(1, 2), padding=(1, 0), dilation=(2, 1)),
        nn.Conv2d(2, 1, (1, 3), stride=(2, 1)),
    ),
}


def _expected_box(row: LayerRF, unit: int, n: int) -> tuple[int, int]:
    first, last = row.span(unit)
    return max(first, 0), min(last, n - 1)  # the gradient only exists inside the image


def _units(n: int) -> list[int]:
    """The border units (clipped fields), the middle one and every 4th: enough to catch an error, fast."""
    return sorted({0, 1, n // 2, n - 2, n - 1} | set(range(0, n, 4)) & set(range(n)))


@pytest.mark.parametrize("name", STACKS)
def test_calculator_matches_gradients_of_every_unit(name):
    model = _positive_linear(STACKS[name]())
    h, w = 40, 37
    rows_h = receptive_field(model, input_size=h, axis=0)
    rows_w = receptive_field(model, input_size=w, axis=1)
    out = model(torch.zeros(1, 1, h, w))
    assert (rows_h[-1].out_size, rows_w[-1].out_size) == tuple(out.shape[2:])
    dilated = any(s.dilation > 1 for s in layer_specs(model, 0) + layer_specs(model, 1))
    inside = 0
    for i in _units(out.shape[2]):
        for j in _units(out.shape[3]):
            measured = empirical_receptive_field(model, (1, h, w), (i, j), batch=1)
            for got, row, unit, n in ((measured.rows, rows_h[-1], i, h), (measured.cols, rows_w[-1], j, w)):
                box = _expected_box(row, unit, n)
                if box == row.span(unit) or not dilated:
                    assert got == box, (name, i, j)
                    inside += box == row.span(unit)
                else:  # clipped by the border: the border pixel may fall into a gap of the dilated kernel
                    assert box[0] <= got[0] <= got[1] <= box[1], (name, i, j)
    assert inside > 0  # some units see only real pixels


def test_relu_cnn_with_max_pooling_and_dilation():
    """A real (random, ReLU, max-pooling) CNN: the union over a batch of random inputs fills the field."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(8, 8, 3, padding=2, dilation=2),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, stride=2, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 4, 3, padding=1),
    )
    rows = receptive_field(model, input_size=64)
    assert [(r.size, r.jump, r.start) for r in rows] == [
        (3, 1, -1),
        (5, 1, -2),
        (6, 2, -2),
        (14, 2, -6),
        (18, 4, -8),
        (26, 4, -12),
    ]
    for unit in [(8, 8), (5, 9), (0, 0), (15, 15)]:
        measured = empirical_receptive_field(model, (3, 64, 64), unit, batch=16)
        assert measured.rows == _expected_box(rows[-1], unit[0], 64)
        assert measured.cols == _expected_box(rows[-1], unit[1], 64)
    assert model.training  # the mode is restored
    interior = empirical_receptive_field(model, (3, 64, 64), (8, 8), batch=16)
    assert interior.size == (26, 26) and interior.grad.shape == (64, 64)


def test_known_values_and_tuples():
    # three 3x3 convolutions see 7x7; a 2x2 pooling doubles the jump
    assert [r.size for r in receptive_field([(3, 1, 1)] * 3)] == [3, 5, 7]
    rows = receptive_field([(3, 1, 1), (3, 1, 1), (2, 2, 1), (3, 1, 1)])
    assert [(r.size, r.jump) for r in rows] == [(3, 1), (5, 1), (6, 2), (10, 2)]
    # dilations 1, 2, 4, 8: 3, 7, 15, 31 (exponential growth, Yu and Koltun)
    assert [r.size for r in receptive_field([(3, 1, 2**i) for i in range(4)])] == [3, 7, 15, 31]
    # padding moves the start, not the size
    rows = receptive_field([(3, 1, 1, 1), (3, 2, 1, 1), (3, 1, 1, 1)], input_size=10)
    assert [(r.size, r.jump, r.start, r.out_size) for r in rows] == [
        (3, 1, -1, 10),
        (5, 2, -2, 5),
        (9, 2, -4, 5),
    ]
    assert rows[-1].span(2) == (0, 8) and rows[-1].center == 0.0
    assert receptive_field([]) == []


def test_layer_specs_reads_modules_and_skips_pointwise_layers():
    model = nn.Sequential(
        nn.Conv2d(1, 4, 5, stride=2, padding=2),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.MaxPool2d(3, 2, 1),
        nn.Sequential(nn.Conv2d(4, 4, 3, dilation=2), nn.Dropout()),
        nn.AvgPool2d(2),
    )
    specs = layer_specs(model)
    assert [(s.kernel, s.stride, s.dilation, s.padding) for s in specs] == [
        (5, 2, 1, 2),
        (3, 2, 1, 1),
        (3, 1, 2, 0),
        (2, 2, 1, 0),
    ]
    assert "Conv2d" in specs[0].name and specs[2].span == 5
    assert layer_specs([LayerSpec(3), nn.MaxPool2d(2), (3, 1, 2, 1)])[1].stride == 2
    table = format_table(receptive_field(model, input_size=32))
    assert len(table.splitlines()) == 5 and "RF size" in table


def test_bad_input_raises_clear_errors():
    with pytest.raises(TypeError, match="no fixed receptive-field arithmetic"):
        layer_specs(nn.Sequential(nn.Conv2d(1, 1, 3), nn.Flatten(), nn.Linear(4, 2)))
    with pytest.raises(TypeError, match=r"tuple \(kernel, stride, dilation"):
        layer_specs([(3, 1)])
    with pytest.raises(ValueError, match="kernel must be >= 1"):
        LayerSpec(0)
    with pytest.raises(ValueError, match="padded input has only 4"):
        receptive_field([(5, 1, 1)], input_size=4)
    with pytest.raises(ValueError, match="axis must be 0"):
        layer_specs([(3, 1, 1)], axis=2)
    with pytest.raises(ValueError, match="outside the output map"):
        empirical_receptive_field(nn.Conv2d(1, 1, 3), (1, 8, 8), (6, 0))
    with pytest.raises(ValueError, match="padding='same' is not supported"):
        layer_specs(nn.Conv2d(1, 1, 3, padding="same"))
