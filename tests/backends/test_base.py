"""Unit tests of harness/backends/base.py: the Runner contract (feed checks, lifecycle)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from harness.backends.base import Runner
from harness.convert.workarounds import INPUTS_WITH_INVERSE, INPUTS_WITHOUT_INVERSE
from harness.errors import InvalidArgument, InvalidInput, ShapeError
from harness.model.geometry import inverse_precomputed


def make_feed(views: int = 3, height: int = 128, width: int = 160, depth: int = 48,
              with_inverse: bool = False) -> dict[str, torch.Tensor]:
    """A valid MVSNet feed: invertible pinhole projections, monotonic positive depths."""
    k = torch.tensor([[100.0, 0.0, width / 8], [0.0, 100.0, height / 8], [0.0, 0.0, 1.0]])
    proj = torch.eye(4).repeat(1, views, 1, 1)
    for view in range(views):
        extrinsic = torch.eye(4)
        extrinsic[0, 3] = 10.0 * view
        proj[0, view, :3, :4] = k @ extrinsic[:3, :4]
    feed = {
        "imgs": torch.rand(1, views, 3, height, width, generator=torch.Generator().manual_seed(1)),
        "proj_matrices": proj,
        "depth_values": torch.linspace(425.0, 935.0, depth).unsqueeze(0),
    }
    if with_inverse:
        feed["inverse_proj_matrices"] = inverse_precomputed(proj)
    return feed


class FakeRunner(Runner):
    """Returns zeros of the right shape; counts lifecycle calls."""

    name = "fake"

    def __init__(self, with_inverse: bool = False, validate_values: bool = True) -> None:
        super().__init__(validate_values)
        self.input_names = INPUTS_WITH_INVERSE if with_inverse else INPUTS_WITHOUT_INVERSE
        self.prepared = self.closed = self.inferred = 0
        self.last_feed: dict[str, torch.Tensor] = {}

    def _prepare(self) -> None:
        self.prepared += 1

    def _close(self) -> None:
        self.closed += 1

    def _infer(self, feed):
        self.inferred += 1
        self.last_feed = feed
        shape = self.output_shape(feed)
        return {"depth": torch.zeros(shape), "photometric_confidence": torch.zeros(shape)}


def test_a_valid_feed_is_accepted():
    FakeRunner().check_feed(make_feed())
    FakeRunner(with_inverse=True).check_feed(make_feed(with_inverse=True))


def test_missing_input_is_refused_naming_it():
    feed = make_feed()
    del feed["depth_values"]
    with pytest.raises(InvalidInput, match=r"missing \['depth_values'\]"):
        FakeRunner().check_feed(feed)


def test_unexpected_input_is_refused_naming_it():
    feed = make_feed(with_inverse=True)
    with pytest.raises(InvalidInput, match=r"unexpected \['inverse_proj_matrices'\]") as info:
        FakeRunner().check_feed(feed)
    assert "prepare_feed" in str(info.value)


def test_runner_with_inverse_requires_the_inverse():
    with pytest.raises(InvalidInput, match=r"missing \['inverse_proj_matrices'\]"):
        FakeRunner(with_inverse=True).check_feed(make_feed())


def test_float64_input_is_refused():
    feed = make_feed()
    feed["imgs"] = feed["imgs"].double()
    with pytest.raises(InvalidInput, match="wrong dtype") as info:
        FakeRunner().check_feed(feed)
    assert "torch.float64" in str(info.value)
    assert "fake: imgs" in str(info.value)
    assert isinstance(info.value, InvalidArgument) and isinstance(info.value, ValueError)


def test_non_tensor_input_is_refused():
    feed = make_feed()
    feed["proj_matrices"] = feed["proj_matrices"].numpy()
    with pytest.raises(InvalidInput, match="is not a torch.Tensor") as info:
        FakeRunner().check_feed(feed)
    assert isinstance(feed["proj_matrices"], np.ndarray)
    assert "ndarray" in str(info.value)


@pytest.mark.parametrize("change, fragment", [
    (lambda f: f.update(imgs=f["imgs"][:, :, :2]), "imgs | wrong shape"),
    (lambda f: f.update(imgs=f["imgs"][:, :1]), "too few views"),
    (lambda f: f.update(proj_matrices=f["proj_matrices"][:, :2]), "proj_matrices | shape disagrees"),
    (lambda f: f.update(depth_values=f["depth_values"][0]), "depth_values | wrong shape"),
    (lambda f: f.update(imgs=torch.rand(1, 3, 3, 130, 160)), "does not fit MVSNet's 3D U-Net"),
    (lambda f: f.update(depth_values=f["depth_values"][:, :44]), "number of depth hypotheses"),
])
def test_bad_shapes_are_refused(change, fragment):
    feed = make_feed()
    change(feed)
    with pytest.raises(ShapeError, match=fragment.replace("|", r"\|")) as info:
        FakeRunner().check_feed(feed)
    assert isinstance(info.value, InvalidInput)


def test_nan_input_is_refused():
    feed = make_feed()
    feed["imgs"][0, 1, 0, 5, 5] = float("nan")
    with pytest.raises(InvalidInput, match="holds NaN or Inf") as info:
        FakeRunner().check_feed(feed)
    assert "1 of" in str(info.value)


def test_nan_check_can_be_disabled():
    feed = make_feed()
    feed["imgs"][0, 1, 0, 5, 5] = float("nan")
    FakeRunner(validate_values=False).check_feed(feed)


def test_inconsistent_inverse_is_refused():
    feed = make_feed(with_inverse=True)
    feed["inverse_proj_matrices"] = feed["inverse_proj_matrices"] * 1.01
    with pytest.raises(InvalidInput, match="is not the inverse"):
        FakeRunner(with_inverse=True).check_feed(feed)


def test_unordered_depth_hypotheses_are_refused():
    feed = make_feed()
    feed["depth_values"][0, 10] = feed["depth_values"][0, 20]
    with pytest.raises(InvalidInput, match="not strictly monotonic"):
        FakeRunner().check_feed(feed)


def test_infer_prepares_once_checks_and_returns_named_outputs():
    runner = FakeRunner()
    feed = make_feed()
    first = runner.infer(feed)
    runner.infer(feed)
    assert runner.prepared == 1 and runner.inferred == 2
    assert set(first) == {"depth", "photometric_confidence"}
    assert first["depth"].shape == (1, 32, 40)
    assert tuple(runner.last_feed) == INPUTS_WITHOUT_INVERSE
    assert all(t.is_contiguous() for t in runner.last_feed.values())


def test_infer_does_not_call_the_backend_with_a_bad_feed():
    runner = FakeRunner()
    feed = make_feed()
    feed["imgs"] = feed["imgs"].double()
    with pytest.raises(InvalidInput):
        runner.infer(feed)
    assert runner.inferred == 0


def test_infer_orders_the_feed_like_the_inputs():
    runner = FakeRunner(with_inverse=True)
    feed = make_feed(with_inverse=True)
    shuffled = {name: feed[name] for name in reversed(list(feed))}
    runner.infer(shuffled)
    assert tuple(runner.last_feed) == INPUTS_WITH_INVERSE


def test_context_manager_prepares_and_closes_once():
    runner = FakeRunner()
    with runner as entered:
        assert entered is runner
        assert runner.prepared == 1
    assert runner.closed == 1
    runner.close()  # closing a closed runner is a no-op
    assert runner.closed == 1


def test_close_without_prepare_does_nothing():
    runner = FakeRunner()
    runner.close()
    assert runner.closed == 0


def test_runner_can_be_prepared_again_after_close():
    runner = FakeRunner()
    runner.prepare()
    runner.close()
    runner.infer(make_feed())
    assert runner.prepared == 2


def test_output_shape_is_a_quarter_of_the_image():
    assert FakeRunner().output_shape(make_feed(height=256, width=320)) == (1, 64, 80)
    with pytest.raises(ShapeError):
        FakeRunner().output_shape({"imgs": torch.zeros(3, 3, 128, 160)})


def test_describe_names_the_runner_and_device():
    assert FakeRunner().describe() == {"name": "fake", "device": "cpu"}


def test_runner_is_abstract():
    with pytest.raises(TypeError):
        Runner()  # type: ignore[abstract]


# -- an injected model spec: the runner checks that model's feeds, not MVSNet's ------------------

def _one_input_spec():
    from harness.modelspec import ModelSpec, OutputSpec

    def validate(feed, *, subject, input_names, values):
        if feed["x"].dim() != 2:
            raise ShapeError(f"{subject}: x", "wrong rank", observed=feed["x"].dim(), expected=2)

    return ModelSpec("line", "Line", ("x",), (OutputSpec("y"),), validate=validate, feed_fix="feed x only")


class OneInputRunner(Runner):
    name = "line"
    input_names = ("x",)

    def _infer(self, feed):
        return {"y": feed["x"] * 2}


def test_an_injected_spec_replaces_mvsnets_checks():
    runner = OneInputRunner(model_spec=_one_input_spec())
    assert runner.model_spec.name == "line"
    assert torch.equal(runner.infer({"x": torch.ones(2, 3)})["y"], torch.full((2, 3), 2.0))
    with pytest.raises(ShapeError, match=r"line: x \| wrong rank: 1"):
        runner.infer({"x": torch.ones(3)})
    with pytest.raises(InvalidInput, match="feed names do not match") as info:
        runner.infer({"imgs": torch.ones(2, 3)})
    assert "Fix: feed x only." in str(info.value)


def test_a_runner_without_a_spec_gets_mvsnets():
    assert FakeRunner().model_spec.name == "mvsnet"
    assert FakeRunner().model_spec.output_names == ("depth", "photometric_confidence")


def test_output_shape_of_a_spec_that_gives_none_says_so():
    with pytest.raises(InvalidArgument, match="the model spec gives no output shapes"):
        OneInputRunner(model_spec=_one_input_spec()).output_shape({"x": torch.ones(2, 3)})
