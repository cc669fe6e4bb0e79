"""Unit tests of harness/convert/onnx_export.py on the small case (3 views, 128x160, D=48).

Exports are expensive (about a second each on a CPU), so the graphs are built once per module
into a temporary cache and shared by the tests.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import helper

from harness.convert.cache import ArtifactCache, canonical_key
from harness.convert.onnx_export import (
    DEFAULT_OPSET,
    ExportConfig,
    OnnxFromTorch,
    SimplifiedOnnxFromOnnx,
    check,
    export_code_digest,
    export_onnx_bytes,
)
from harness.convert.workarounds import get_workaround
from harness.data.cases import case_feed, case_views, get_case
from harness.errors import ExportError, InvalidArgument, UnsupportedOperator
from harness.model.checkpoint import state_dict_digest

SMALL = get_case("small")


# -- module fixtures: one model, one feed, a few exports ---------------------------------------

@pytest.fixture(scope="module")
def feed():
    return case_feed(SMALL, case_views(SMALL), with_inverse=True)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return ArtifactCache(tmp_path_factory.mktemp("onnx-export-cache"))


def _builder(model, feed, cache, workaround="precomputed", exporter="torchscript", opset=DEFAULT_OPSET, digest=None):
    return OnnxFromTorch(model, digest or state_dict_digest(model), feed,
                         ExportConfig(exporter=exporter, opset=opset, workaround=workaround),
                         get_workaround(workaround), cache)


@pytest.fixture(scope="module")
def precomputed_builder(model, feed, cache):
    return _builder(model, feed, cache, "precomputed")


@pytest.fixture(scope="module")
def precomputed(precomputed_builder):
    """The first export into an empty cache (a miss)."""
    return precomputed_builder()


@pytest.fixture(scope="module")
def closed_form(model, feed, cache):
    return _builder(model, feed, cache, "closed_form")()


@pytest.fixture(scope="module")
def simplified(precomputed, cache):
    return SimplifiedOnnxFromOnnx(precomputed, cache)()


def _graph_inputs(proto: onnx.ModelProto) -> list[str]:
    initializers = {i.name for i in proto.graph.initializer}
    return [i.name for i in proto.graph.input if i.name not in initializers]


def _attribute(node: onnx.NodeProto, name: str):
    for attribute in node.attribute:
        if attribute.name == name:
            value = helper.get_attribute_value(attribute)
            return value.decode() if isinstance(value, bytes) else value
    return None


def _run_ort(path, feed: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    arrays = {i.name: feed[i.name].numpy() for i in session.get_inputs()}
    return dict(zip(names, session.run(names, arrays)))


# -- the failure without a workaround ---------------------------------------------------------

def _assert_names_linalg_inv_and_strategies(error: UnsupportedOperator) -> None:
    message = str(error)
    assert "aten::linalg_inv" in message
    assert "precomputed" in message and "closed_form" in message
    assert "--harness-workarounds" in message


def test_exporting_without_a_workaround_raises_unsupported_operator(model, feed, tmp_path):
    cache = ArtifactCache(tmp_path)
    builder = _builder(model, feed, cache, workaround="none")
    with pytest.raises(UnsupportedOperator) as info:
        builder()
    _assert_names_linalg_inv_and_strategies(info.value)
    assert "torchscript" in str(info.value)
    assert isinstance(info.value, ExportError)
    # nothing usable was cached
    assert not list(tmp_path.rglob("meta.json"))


def test_dynamo_export_without_a_workaround_raises_unsupported_operator(model, feed):
    workaround = get_workaround("none")
    with pytest.raises(UnsupportedOperator) as info:
        export_onnx_bytes(model, workaround, workaround.prepare_feed(feed), "dynamo", DEFAULT_OPSET)
    _assert_names_linalg_inv_and_strategies(info.value)
    assert "dynamo" in str(info.value)


# -- the exported graph -----------------------------------------------------------------------

def test_precomputed_graph_has_the_four_named_inputs_and_two_outputs(precomputed):
    proto = precomputed.load()
    assert _graph_inputs(proto) == ["imgs", "proj_matrices", "inverse_proj_matrices", "depth_values"]
    assert [o.name for o in proto.graph.output] == ["depth", "photometric_confidence"]


def test_precomputed_graph_inputs_have_the_case_shapes(precomputed):
    proto = precomputed.load()
    shapes = {i.name: tuple(d.dim_value for d in i.type.tensor_type.shape.dim) for i in proto.graph.input}
    expected = SMALL.input_shapes(with_inverse=True)
    assert {name: shapes[name] for name in expected} == expected


def test_closed_form_graph_has_no_inverse_input_and_no_inverse_operator(closed_form):
    proto = closed_form.load()
    assert _graph_inputs(proto) == ["imgs", "proj_matrices", "depth_values"]
    assert [o.name for o in proto.graph.output] == ["depth", "photometric_confidence"]
    assert all(n.domain in ("", "ai.onnx") for n in proto.graph.node)
    assert "Inverse" not in {n.op_type for n in proto.graph.node}


def test_export_uses_the_requested_opset(precomputed):
    proto = precomputed.load()
    default_domain = [o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")]
    assert default_domain == [17]
    assert precomputed.audit["opset"] == 17
    assert precomputed.config.opset == 17


def test_grid_sample_is_bilinear_with_align_corners(precomputed):
    nodes = [n for n in precomputed.load().graph.node if n.op_type == "GridSample"]
    assert len(nodes) == SMALL.views - 1  # one warp per source view
    for node in nodes:
        assert _attribute(node, "align_corners") == 1
        assert _attribute(node, "mode") == "bilinear"


def test_exported_graph_has_no_tensorrt_findings(precomputed, closed_form):
    for artifact in (precomputed, closed_form):
        assert artifact.audit["trt_findings"] == []
        artifact.require_trt_ready()


def test_artifact_records_node_count_and_audit(precomputed):
    proto = precomputed.load()
    assert precomputed.node_count == len(proto.graph.node) == precomputed.audit["node_count"]
    assert sum(precomputed.audit["op_counts"].values()) == precomputed.node_count
    assert precomputed.variant == "raw"
    assert not precomputed.simplified
    assert precomputed.config.label.startswith("torchscript-op17-precomputed")


# -- caching ----------------------------------------------------------------------------------

def test_first_export_is_a_miss_and_the_second_a_hit_with_the_same_sha256(precomputed_builder, precomputed):
    assert precomputed.cache_status == "miss"
    assert precomputed.seconds > 0
    again = precomputed_builder()
    assert again.cache_status == "hit"
    assert again.seconds == 0.0
    assert again.sha256 == precomputed.sha256
    assert again.path == precomputed.path
    assert again.audit == precomputed.audit


def test_key_covers_opset_exporter_workaround_shape_and_weights(model, feed, tmp_path):
    cache = ArtifactCache(tmp_path)
    base = canonical_key(_builder(model, feed, cache).key_fields())
    bigger = dict(feed, imgs=torch.zeros(1, 3, 3, 256, 320))
    more_depths = dict(feed, depth_values=torch.zeros(1, 96))
    variants = {
        "opset": _builder(model, feed, cache, opset=18),
        "exporter": _builder(model, feed, cache, exporter="dynamo"),
        "workaround": _builder(model, feed, cache, workaround="closed_form"),
        "image shape": _builder(model, bigger, cache),
        "depth count": _builder(model, more_depths, cache),
        "weights": _builder(model, feed, cache, digest="another-weights-digest"),
    }
    keys = {name: canonical_key(b.key_fields()) for name, b in variants.items()}
    for name, key in keys.items():
        assert key != base, f"changing the {name} does not change the cache key"
    assert len(set(keys.values())) == len(keys)
    assert canonical_key(_builder(model, feed, cache).key_fields()) == base
    assert not list(tmp_path.iterdir())  # building keys exports nothing (builders are lazy)


def test_key_fields_record_versions_and_input_shapes(precomputed_builder):
    fields = precomputed_builder.key_fields()
    assert fields["torch"] == torch.__version__
    assert fields["onnx"] == onnx.__version__
    assert fields["code"] == export_code_digest()
    assert fields["inputs"] == {k: list(v) for k, v in SMALL.input_shapes(with_inverse=True).items()}


# -- simplification ---------------------------------------------------------------------------

def test_simplified_records_node_counts_before_and_after(precomputed, simplified):
    assert simplified.simplified and simplified.variant == "simplified"
    assert simplified.extra["nodes_before"] == precomputed.node_count
    assert simplified.extra["nodes_before"] >= simplified.extra["nodes_after"]
    assert simplified.extra["nodes_after"] == simplified.node_count == len(simplified.load().graph.node)
    assert "onnxsim" in simplified.extra
    assert simplified.sha256 != precomputed.sha256
    assert simplified.config == precomputed.config


def test_simplified_graph_keeps_the_input_and_output_names(precomputed, simplified):
    raw, simple = precomputed.load(), simplified.load()
    assert _graph_inputs(simple) == _graph_inputs(raw)
    assert [o.name for o in simple.graph.output] == [o.name for o in raw.graph.output]


def test_simplified_graph_gives_the_same_onnxruntime_outputs(precomputed, simplified, feed):
    graph_feed = get_workaround("precomputed").prepare_feed(feed)
    raw, simple = _run_ort(precomputed.path, graph_feed), _run_ort(simplified.path, graph_feed)
    assert set(raw) == set(simple) == {"depth", "photometric_confidence"}
    assert raw["depth"].shape == (1, SMALL.height // 4, SMALL.width // 4)
    assert float(np.abs(raw["depth"] - simple["depth"]).max()) < 1e-4
    assert float(np.abs(raw["photometric_confidence"] - simple["photometric_confidence"]).max()) < 1e-4


def test_simplified_second_call_is_a_hit(precomputed, simplified, cache):
    again = SimplifiedOnnxFromOnnx(precomputed, cache)()
    assert again.cache_status == "hit"
    assert again.sha256 == simplified.sha256
    assert again.extra == simplified.extra


# -- small pieces -----------------------------------------------------------------------------

def test_export_code_digest_is_stable():
    first = export_code_digest()
    export_code_digest.cache_clear()
    assert export_code_digest() == first
    assert len(first) == 16
    int(first, 16)


@pytest.mark.parametrize("kwargs, fragment", [
    ({"exporter": "tracing"}, "unknown exporter"),
    ({"opset": 15}, "unsupported ONNX opset"),
    ({"opset": 24}, "unsupported ONNX opset"),
])
def test_export_config_refuses_bad_values(kwargs, fragment):
    with pytest.raises(InvalidArgument, match=fragment):
        ExportConfig(**kwargs)


def test_export_config_label_names_exporter_opset_and_workaround():
    label = ExportConfig("dynamo", 18, "closed_form").label
    assert label.startswith("dynamo-op18-closed_form")
    assert label != ExportConfig("torchscript", 18, "closed_form").label


def test_onnxsim_failure_is_an_export_error_naming_the_variants_option(precomputed, tmp_path, monkeypatch):
    import onnxsim

    def crash(model, *args, **kwargs):
        raise RuntimeError("onnxsim crashed in C++")

    monkeypatch.setattr(onnxsim, "simplify", crash)
    with pytest.raises(ExportError, match="onnxsim failed") as info:
        SimplifiedOnnxFromOnnx(precomputed, ArtifactCache(tmp_path))()
    assert "onnxsim crashed in C++" in str(info.value)
    assert "--harness-variants raw" in info.value.fix  # the plugin's option (there is no --harness-onnx-variants)


def test_onnxsim_check_failure_is_an_export_error(precomputed, tmp_path, monkeypatch):
    import onnxsim

    monkeypatch.setattr(onnxsim, "simplify", lambda model, *args, **kwargs: (model, False))
    with pytest.raises(ExportError, match="onnxsim's check failed") as info:
        SimplifiedOnnxFromOnnx(precomputed, ArtifactCache(tmp_path))()
    assert "--harness-variants raw" in info.value.fix


def test_check_refuses_an_invalid_graph_with_export_error():
    node = helper.make_node("Relu", ["undefined_input"], ["y"])
    graph = helper.make_graph([node], "broken", [],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(ExportError, match="onnx.checker rejects the graph"):
        check(proto, "broken graph")
