"""Unit tests of harness/convert/workarounds.py: graph inputs per strategy and feed preparation."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from harness.convert.workarounds import (
    EXPORTABLE,
    INPUTS_WITH_INVERSE,
    INPUTS_WITHOUT_INVERSE,
    WORKAROUNDS,
    get_workaround,
)
from harness.errors import HarnessError, InvalidArgument
from harness.model.geometry import inverse_precomputed
from harness.model.mvsnet import OUTPUT_NAMES


def _feed(with_inverse: bool) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    proj = torch.eye(4).repeat(1, 3, 1, 1) + 0.1 * torch.rand(1, 3, 4, 4, generator=gen)
    proj[..., 3, :] = torch.tensor([0.0, 0.0, 0.0, 1.0])
    feed = {
        "depth_values": torch.linspace(425.0, 935.0, 48).unsqueeze(0),
        "proj_matrices": proj,
        "imgs": torch.rand(1, 3, 3, 128, 160, generator=gen),
    }
    if with_inverse:
        feed["inverse_proj_matrices"] = inverse_precomputed(proj)
    return feed


class _Recorder(nn.Module):
    """Stands in for MVSNet: records the inverse it is given and returns named outputs."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: dict[str, torch.Tensor | None] = {}

    def forward(self, imgs, proj, depth_values, inverse=None):
        self.seen = {"imgs": imgs, "proj": proj, "depth_values": depth_values, "inverse": inverse}
        return {"depth": depth_values.sum().reshape(1), "photometric_confidence": imgs.mean().reshape(1)}


def test_precomputed_takes_the_inverse_as_third_input():
    names = get_workaround("precomputed").input_names
    assert names == ("imgs", "proj_matrices", "inverse_proj_matrices", "depth_values")
    assert names[2] == "inverse_proj_matrices"
    assert get_workaround("precomputed").feeds_inverse


@pytest.mark.parametrize("name", ["closed_form", "none"])
def test_closed_form_and_none_keep_the_original_three_inputs(name):
    workaround = get_workaround(name)
    assert workaround.input_names == ("imgs", "proj_matrices", "depth_values")
    assert len(workaround.input_names) == 3
    assert not workaround.feeds_inverse


@pytest.mark.parametrize("name", list(WORKAROUNDS))
def test_every_strategy_names_the_outputs(name):
    assert get_workaround(name).output_names == OUTPUT_NAMES == ("depth", "photometric_confidence")


def test_none_is_not_exportable():
    assert set(EXPORTABLE) == {"precomputed", "closed_form", "custom_op"}
    assert "none" in WORKAROUNDS


def test_prepare_feed_adds_the_inverse_when_missing():
    feed = _feed(with_inverse=False)
    prepared = get_workaround("precomputed").prepare_feed(feed)
    assert tuple(prepared) == INPUTS_WITH_INVERSE
    torch.testing.assert_close(prepared["inverse_proj_matrices"], inverse_precomputed(feed["proj_matrices"]))
    assert prepared["inverse_proj_matrices"].dtype == torch.float32
    assert "inverse_proj_matrices" not in feed  # the caller's feed is left alone


def test_prepare_feed_keeps_a_given_inverse():
    feed = _feed(with_inverse=True)
    marker = feed["inverse_proj_matrices"].clone()
    feed["inverse_proj_matrices"] = marker
    prepared = get_workaround("precomputed").prepare_feed(feed)
    assert prepared["inverse_proj_matrices"] is marker


@pytest.mark.parametrize("name", ["closed_form", "none"])
def test_prepare_feed_drops_the_inverse_and_orders_the_keys(name):
    feed = _feed(with_inverse=True)
    prepared = get_workaround(name).prepare_feed(feed)
    assert tuple(prepared) == INPUTS_WITHOUT_INVERSE
    for key in INPUTS_WITHOUT_INVERSE:
        assert prepared[key] is feed[key]


def test_prepare_feed_orders_the_keys_like_the_graph_inputs():
    feed = _feed(with_inverse=True)
    assert list(feed)[0] == "depth_values"  # deliberately out of order
    assert tuple(get_workaround("precomputed").prepare_feed(feed)) == INPUTS_WITH_INVERSE


def test_get_workaround_refuses_an_unknown_name_naming_the_strategies():
    with pytest.raises(InvalidArgument) as info:
        get_workaround("bogus")
    message = str(info.value)
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value, HarnessError)
    assert "bogus" in message
    for name in ("precomputed", "closed_form", "none"):
        assert name in message
    assert "--harness-workarounds" in message


def test_export_module_precomputed_passes_the_fed_inverse_through():
    recorder = _Recorder()
    feed = _feed(with_inverse=True)
    module = get_workaround("precomputed").export_module(recorder)
    assert not module.training
    outputs = module(*(feed[n] for n in INPUTS_WITH_INVERSE))
    assert recorder.seen["inverse"] is feed["inverse_proj_matrices"]
    assert isinstance(outputs, tuple) and len(outputs) == 2


@pytest.mark.parametrize("name", ["closed_form", "none"])
def test_export_module_computes_the_inverse_inside(name):
    recorder = _Recorder()
    feed = _feed(with_inverse=False)
    module = get_workaround(name).export_module(recorder)
    module(*(feed[n] for n in INPUTS_WITHOUT_INVERSE))
    torch.testing.assert_close(recorder.seen["inverse"], torch.linalg.inv(feed["proj_matrices"]), rtol=1e-4, atol=1e-5)
