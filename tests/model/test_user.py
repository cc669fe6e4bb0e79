"""Unit tests of harness/model/user.py: the user's model code as the torch reference."""

from __future__ import annotations

import textwrap

import pytest
import torch

from harness.chain import BUNDLED_WEIGHTS, Chain, ChainConfig
from harness.compare import compare
from harness.data.cases import get_case
from harness.errors import CheckpointError, InvalidArgument
from harness.gates.limits import Tolerances
from harness.model.mvsnet import OUTPUT_NAMES
from harness.model.user import import_factory, load_user_model

MODULE = textwrap.dedent('''
    """A user's MVSNet code: MVSNet_pytorch's call, and the article's patch (inverse fed, tuple out)."""
    from harness.model.mvsnet import MVSNet


    class Original(MVSNet):
        def forward(self, imgs, proj_matrices, depth_values):
            return super().forward(imgs, proj_matrices, depth_values)


    class ArticlePatched(MVSNet):
        def forward(self, in_imgs, in_proj_matrices, in_inverse_proj_matrices, in_depth_values):
            out = super().forward(in_imgs, in_proj_matrices, in_depth_values, in_inverse_proj_matrices)
            return out["depth"], out["photometric_confidence"]


    class Unnamed(MVSNet):
        def forward(self, a, b, c, d):  # the article's positional order
            out = super().forward(a, b, d, c)
            return (out["depth"], out["photometric_confidence"])


    def on_torch_1_3():
        """MVSNet_pytorch's code on torch >= 1.3: grid_sample's default align_corners=False."""
        return MVSNet(align_corners=False)


    class NotMVSNet(MVSNet):
        def __init__(self):
            super().__init__()
            self.extra = __import__("torch").nn.Linear(2, 2)
''')


@pytest.fixture
def user_package(tmp_path, monkeypatch):
    package = tmp_path / "usercode"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "mvsnet.py").write_text(MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "usercode.mvsnet"
    import sys

    for name in [m for m in sys.modules if m.startswith("usercode")]:
        del sys.modules[name]


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    built = Chain(ChainConfig(device="cpu", cache_dir=tmp_path_factory.mktemp("user-cache")))
    yield built
    built.close()


def test_every_call_convention_gives_the_harness_reference(user_package, chain):
    case = get_case("small")
    reference = chain.user_reference_outputs(case)
    # the fed inverse is computed in float64, torch.inverse in float32: the torch-vs-torch gate
    gate = Tolerances.load().lookup("torch-fp32", "torch-fp32", "fp32", OUTPUT_NAMES)
    for name in ("Original", "ArticlePatched", "Unnamed"):
        outputs = chain.user_reference_outputs(case, f"{user_package}:{name}")
        diffs = compare(reference, outputs, gate, depth_values=chain.case_feed(case)["depth_values"])
        assert all(diffs.values()), (name, {k: d.row() for k, d in diffs.items()})
    assert load_user_model(f"{user_package}:ArticlePatched", BUNDLED_WEIGHTS).order == (
        "imgs", "proj_matrices", "inverse_proj_matrices", "depth_values")


def test_the_user_model_really_is_the_reference(user_package, chain):
    case = get_case("small")
    theirs = chain.user_reference_outputs(case, f"{user_package}:on_torch_1_3")
    other = chain.user_reference_outputs(case, None, align_corners=False)
    ours = chain.user_reference_outputs(case)
    assert torch.equal(theirs["depth"], other["depth"])
    assert (theirs["depth"] - ours["depth"]).abs().max() > 1.0  # mm: the convention matters


def test_bad_specs_and_checkpoints_are_refused(user_package):
    with pytest.raises(InvalidArgument, match="not MODULE:CALLABLE"):
        import_factory("usercode.mvsnet.MVSNet")
    with pytest.raises(InvalidArgument, match="cannot import the module.*nosuch"):
        import_factory("nosuch.module:MVSNet")
    with pytest.raises(InvalidArgument, match="has no Missing"):
        import_factory(f"{user_package}:Missing")
    with pytest.raises(CheckpointError, match="missing extra.bias, extra.weight"):
        load_user_model(f"{user_package}:NotMVSNet", BUNDLED_WEIGHTS)


def test_a_forward_that_raises_is_reported_with_its_call(user_package, chain, tmp_path):
    (tmp_path / "usercode" / "broken.py").write_text(
        "from harness.model.mvsnet import MVSNet\n\n\n"
        "class Broken(MVSNet):\n"
        "    def forward(self, imgs, proj_matrices, depth_values):\n"
        "        raise RuntimeError('homo_warping: shape mismatch')\n")
    with pytest.raises(InvalidArgument, match="forward\\(\\) raised: RuntimeError: homo_warping: shape mismatch"):
        chain.user_reference_outputs(get_case("small"), "usercode.broken:Broken")


def test_the_stage_run_is_also_the_reference_run_on_the_cpu(tmp_path, monkeypatch):
    """check's stage gate runs the harness MVSNet with probes; on a CPU chain that run's outputs are
    the reference outputs, bit for bit, so check does not run torch a second time for them."""
    from harness.backends import registry

    case = get_case("small")
    plain = Chain(ChainConfig(device="cpu", cache_dir=tmp_path))
    expected = plain.user_reference_outputs(case)
    plain.close()
    probed = Chain(ChainConfig(device="cpu", cache_dir=tmp_path))
    assert probed.user_reference_stages(case)  # the stages, and the outputs kept beside them
    monkeypatch.setattr(registry, "make_runner", lambda *a, **k: pytest.fail("ran torch again for the outputs"))
    kept = probed.user_reference_outputs(case)
    assert set(kept) == set(expected)
    for name, value in expected.items():
        assert torch.equal(kept[name], value), name
    probed.close()
