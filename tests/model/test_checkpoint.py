"""Checkpoints: the MVSNet_pytorch format and its variants load; bad files are refused, by name;
pickles that carry code are refused without running it."""

from __future__ import annotations

import os
import pickle
import random
import re
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from harness.errors import CheckpointError, HarnessError, MissingFile, UnsafeCheckpoint
from harness.model.checkpoint import (
    extract_state_dict,
    load_checkpoint,
    load_state_dict,
    save_checkpoint,
    state_dict_digest,
)
from harness.model.init import plane_sweep_init
from harness.model.mvsnet import MVSNet

BUNDLED_WEIGHTS = Path(__file__).resolve().parents[2] / "fixtures" / "weights" / "mvsnet-default.ckpt"


@pytest.fixture(scope="module")
def trained_like() -> MVSNet:
    """A model whose every tensor differs from a fresh MVSNet (buffers included)."""
    model = plane_sweep_init(MVSNet(), seed=7)
    gen = torch.Generator().manual_seed(8)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.weight.copy_(torch.rand(module.weight.shape, generator=gen) + 0.5)
                module.bias.copy_(torch.randn(module.bias.shape, generator=gen))
                module.running_mean.copy_(torch.randn(module.running_mean.shape, generator=gen))
                module.running_var.copy_(torch.rand(module.running_var.shape, generator=gen) + 0.5)
                module.num_batches_tracked.fill_(1234)
            elif isinstance(module, (nn.Conv2d, nn.Conv3d)) and module.bias is not None:
                module.bias.copy_(torch.randn(module.bias.shape, generator=gen))
    return model


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _assert_same_weights(model: nn.Module, expected: nn.Module) -> None:
    got, want = model.state_dict(), expected.state_dict()
    assert list(got) == list(want)
    different = [k for k in want if got[k].dtype != want[k].dtype or not torch.equal(got[k], want[k])]
    assert different == []


def _assert_loaded(model: MVSNet, expected: MVSNet) -> None:
    assert isinstance(model, MVSNet)
    assert not model.training
    assert not any(module.training for module in model.modules())
    _assert_same_weights(model, expected)
    assert state_dict_digest(model) == state_dict_digest(expected)


def _mvsnet_pytorch_payload(state: dict[str, torch.Tensor], epoch: int = 15) -> dict:
    """What MVSNet_pytorch's train.py saves: DataParallel keys, epoch, optimizer state."""
    return {
        "epoch": epoch,
        "model": {"module." + k: v for k, v in state.items()},
        "optimizer": {
            "state": {0: {"step": torch.tensor(1500.0), "exp_avg": torch.zeros(3)}},
            "param_groups": [{"lr": 0.001, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.0,
                              "amsgrad": False, "params": [0, 1, 2]}],
        },
    }


def _save(obj: object, path: Path) -> Path:
    torch.save(obj, path)
    return path


# ---------------------------------------------------------------- accepted formats


def test_load_checkpoint_accepts_the_mvsnet_pytorch_format_with_module_prefixed_keys(tmp_path, trained_like):
    path = _save(_mvsnet_pytorch_payload(_state(trained_like)), tmp_path / "model_000014.ckpt")
    _assert_loaded(load_checkpoint(path), trained_like)


def test_load_checkpoint_accepts_a_bare_state_dict(tmp_path, trained_like):
    path = _save(_state(trained_like), tmp_path / "bare.pth")
    _assert_loaded(load_checkpoint(path), trained_like)


def test_load_checkpoint_accepts_a_bare_module_prefixed_state_dict(tmp_path, trained_like):
    path = _save({"module." + k: v for k, v in _state(trained_like).items()}, tmp_path / "bare_dp.pth")
    _assert_loaded(load_checkpoint(path), trained_like)


def test_load_checkpoint_accepts_unprefixed_keys_inside_model(tmp_path, trained_like):
    path = _save({"epoch": 3, "model": _state(trained_like)}, tmp_path / "plain.ckpt")
    _assert_loaded(load_checkpoint(path), trained_like)


def test_load_checkpoint_accepts_a_state_dict_entry(tmp_path, trained_like):
    path = _save({"state_dict": _state(trained_like)}, tmp_path / "lightning_like.ckpt")
    _assert_loaded(load_checkpoint(path), trained_like)


def test_load_checkpoint_accepts_a_string_path(tmp_path, trained_like):
    path = _save(_state(trained_like), tmp_path / "bare.pth")
    _assert_loaded(load_checkpoint(str(path)), trained_like)


def test_load_checkpoint_gives_the_requested_inverse_method(tmp_path, trained_like):
    path = _save(_state(trained_like), tmp_path / "bare.pth")
    assert load_checkpoint(path).inverse == "torch"
    assert load_checkpoint(path, inverse="closed_form").inverse == "closed_form"


def test_load_checkpoint_ignores_refinenet_keys_with_a_warning(tmp_path, trained_like):
    payload = _mvsnet_pytorch_payload(_state(trained_like))
    payload["model"]["module.refine_network.conv1.conv.weight"] = torch.zeros(32, 4, 3, 3)
    payload["model"]["module.refine_network.res.weight"] = torch.zeros(1, 32, 3, 3)
    path = _save(payload, tmp_path / "with_refine.ckpt")
    with pytest.warns(UserWarning, match=r"ignoring 2 RefineNet keys"):
        model = load_checkpoint(path)
    _assert_loaded(model, trained_like)


def test_bundled_weights_load_into_mvsnet():
    model = load_checkpoint(BUNDLED_WEIGHTS)
    assert isinstance(model, MVSNet) and not model.training
    assert state_dict_digest(model) != state_dict_digest(MVSNet())


# ---------------------------------------------------------------- key mismatches


def test_load_checkpoint_names_missing_keys(tmp_path, trained_like):
    state = _state(trained_like)
    del state["cost_regularization.prob.bias"]
    del state["feature.conv3.bn.running_var"]
    path = _save({"model": state}, tmp_path / "missing.ckpt")
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    message = str(info.value)
    assert "missing cost_regularization.prob.bias, feature.conv3.bn.running_var" in message
    assert "unexpected" not in message
    assert message.startswith(f"{path} | ")


def test_load_checkpoint_names_unexpected_keys_without_their_prefix(tmp_path, trained_like):
    payload = _mvsnet_pytorch_payload(_state(trained_like))
    payload["model"]["module.extra_head.weight"] = torch.zeros(3)
    path = _save(payload, tmp_path / "unexpected.ckpt")
    with pytest.raises(CheckpointError, match=r"unexpected extra_head\.weight") as info:
        load_checkpoint(path)
    assert "missing" not in str(info.value)


def test_load_checkpoint_names_mismatched_shapes(tmp_path, trained_like):
    state = _state(trained_like)
    state["feature.conv0.conv.weight"] = torch.zeros(8, 3, 5, 5)
    path = _save({"model": state}, tmp_path / "shape.ckpt")
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    assert "wrong shape feature.conv0.conv.weight (8, 3, 5, 5) vs (8, 3, 3, 3)" in str(info.value)


def test_load_checkpoint_clips_long_lists_of_missing_keys(tmp_path, trained_like):
    state = {"feature.conv0.conv.weight": _state(trained_like)["feature.conv0.conv.weight"]}
    path = _save({"model": state}, tmp_path / "nearly_empty.ckpt")
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    total_missing = len(MVSNet().state_dict()) - 1
    assert f"(+{total_missing - 8} more)" in str(info.value)


def test_load_checkpoint_refuses_a_checkpoint_of_another_network(tmp_path):
    other = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 1, 3))
    path = _save({"model": other.state_dict()}, tmp_path / "other.ckpt")
    with pytest.raises(CheckpointError, match=r"unexpected 0\.bias, 0\.weight, 2\.bias, 2\.weight"):
        load_checkpoint(path)


@pytest.mark.parametrize(
    ("payload", "problem"),
    [
        ({}, "holds no state dict"),
        ({"model": {}}, "holds no state dict"),
        ([torch.zeros(1)], "holds no state dict"),
        ({"model": {"feature.conv0.conv.weight": [1.0, 2.0]}}, "not a named tensor"),
        ({"model": {3: torch.zeros(1)}}, "not a named tensor"),
    ],
    ids=["empty-dict", "empty-model", "list", "list-value", "int-key"],
)
def test_load_checkpoint_refuses_objects_that_are_not_state_dicts(tmp_path, payload, problem):
    path = _save(payload, tmp_path / "odd.ckpt")
    with pytest.raises(CheckpointError, match=problem):
        load_checkpoint(path)


def test_load_state_dict_leaves_the_model_untouched_when_keys_do_not_match(trained_like):
    model = MVSNet()
    before = state_dict_digest(model)
    state = _state(trained_like)
    del state["cost_regularization.prob.bias"]
    with pytest.raises(CheckpointError):
        load_state_dict(model, state)
    assert state_dict_digest(model) == before


def test_extract_state_dict_strips_only_the_leading_prefix():
    tensor = torch.zeros(1)
    state = extract_state_dict({"model": {"module.feature.module.x": tensor, "feature.y": tensor}})
    assert list(state) == ["feature.module.x", "feature.y"]


# ---------------------------------------------------------------- unreadable files


def test_load_checkpoint_of_a_missing_file_raises_missing_file(tmp_path):
    path = tmp_path / "nowhere" / "model_000014.ckpt"
    with pytest.raises(MissingFile) as info:
        load_checkpoint(path)
    assert isinstance(info.value, FileNotFoundError)
    assert isinstance(info.value, HarnessError)
    assert str(info.value).startswith(f"{path} | checkpoint not found")


@pytest.mark.parametrize(("content", "begins"), [(b"epoch 14, see model.pt\n", "text: 'epoch 14, see model.pt'"),
                                                 (b"\xff\xfe\x00\x01 onnx", "bytes ff fe 00 01 20 6f 6e 6e")])
def test_a_file_torch_save_did_not_write_is_named_as_such_not_with_torchs_unpickler_text(tmp_path, content, begins):
    """A text file (or an ONNX graph) given as a checkpoint: the message says it is not a torch
    checkpoint and what it begins with, never torch's weights_only advice."""
    path = tmp_path / "notes.ckpt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    assert not isinstance(info.value, UnsafeCheckpoint)
    message = str(info.value)
    assert message.startswith(f"{path} | not a torch checkpoint file: it begins with {begins}. Expected: a file "
                              "written by torch.save")
    assert "weights_only" not in message and "Fix: pass the checkpoint file itself" in message


def test_load_checkpoint_of_a_folder_raises_missing_file(tmp_path):
    with pytest.raises(MissingFile):
        load_checkpoint(tmp_path)


@pytest.mark.parametrize("keep", [0.0, 0.1, 0.5, 0.99])
def test_load_checkpoint_of_a_truncated_file_raises_checkpoint_error(tmp_path, trained_like, keep):
    full = save_checkpoint(trained_like, tmp_path / "full.ckpt").read_bytes()
    path = tmp_path / "truncated.ckpt"
    path.write_bytes(full[: int(len(full) * keep)])
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    # A truncated download is not a security refusal: the message must say what is wrong.
    assert not isinstance(info.value, UnsafeCheckpoint)
    assert "not a readable torch checkpoint" in str(info.value)


@pytest.mark.parametrize(
    "content",
    [b"hello world, this is not a checkpoint\n", b'{"model": {}}', b"PK\x03\x04garbage", b"\x80\x02K\x05."],
    ids=["text", "json", "broken-zip", "pickled-int"],
)
def test_load_checkpoint_of_a_corrupt_file_raises_checkpoint_error(tmp_path, content):
    path = tmp_path / "corrupt.ckpt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError):
        load_checkpoint(path)


def test_load_checkpoint_of_random_bytes_always_raises_checkpoint_error(tmp_path):
    rng = random.Random(0)
    path = tmp_path / "noise.ckpt"
    escaped = []
    for _ in range(40):
        content = bytes(rng.randrange(256) for _ in range(rng.randint(1, 200)))
        path.write_bytes(content)
        try:
            load_checkpoint(path)
        except CheckpointError:
            continue
        except Exception as error:  # noqa: BLE001 - the test reports whatever escaped
            escaped.append(f"{content[:12]!r}...: {type(error).__name__}: {error}")
        else:
            escaped.append(f"{content[:12]!r}...: loaded")
    assert escaped == []


# ---------------------------------------------------------------- code-carrying pickles


class _TouchPayload:
    """Unpickling this runs ``touch MARKER`` (os.system), the classic malicious checkpoint."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _WritePayload:
    """Unpickling this writes MARKER through exec, without a shell."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('ran')",))


def _write_malicious(path: Path, payload: object, how: str) -> None:
    if how == "torch-zip":
        torch.save({"epoch": 1, "model": {"module.feature.conv0.conv.weight": payload}}, path)
    elif how == "torch-legacy":
        torch.save({"model": payload}, path, _use_new_zipfile_serialization=False)
    else:
        with open(path, "wb") as handle:
            pickle.dump({"model": payload}, handle, protocol=2)


@pytest.mark.filterwarnings("ignore:Detected pickle protocol:UserWarning")
@pytest.mark.parametrize("how", ["torch-zip", "torch-legacy", "raw-pickle"])
@pytest.mark.parametrize("payload_type", [_TouchPayload, _WritePayload], ids=["os-system", "exec"])
def test_load_checkpoint_refuses_a_code_payload_without_running_it(tmp_path, how, payload_type):
    marker = tmp_path / "PAYLOAD_RAN"
    path = tmp_path / "evil.ckpt"
    _write_malicious(path, payload_type(marker), how)
    assert not marker.exists()
    with pytest.raises(UnsafeCheckpoint) as info:
        load_checkpoint(path)
    assert not marker.exists(), "the checkpoint's code ran while loading"
    assert isinstance(info.value, CheckpointError) and isinstance(info.value, ValueError)
    assert str(info.value).startswith(f"{path} | refused")
    assert "Fix: re-save it" in str(info.value)


def test_unsafe_checkpoint_message_names_the_refused_callable(tmp_path):
    marker = tmp_path / "PAYLOAD_RAN"
    path = tmp_path / "evil.ckpt"
    _write_malicious(path, _TouchPayload(marker), "torch-zip")
    with pytest.raises(UnsafeCheckpoint) as info:
        load_checkpoint(path)
    message = str(info.value)
    # The observed part says what the file wanted to run, and never advises weights_only=False.
    assert re.search(rf"\b{os.system.__module__}\.system\b", message), message
    assert "weights_only` set to `False` will" not in message
    assert not marker.exists()


def test_refusal_does_not_import_the_module_a_payload_names(tmp_path, monkeypatch):
    # Importing a module runs its top-level code: a refused global must not even be imported.
    # (Plain pickle imports tabnanny here before failing on the call.)
    monkeypatch.delitem(sys.modules, "tabnanny", raising=False)
    path = tmp_path / "evil.ckpt"
    path.write_bytes(b"\x80\x02ctabnanny\ncheck\nq\x00)R.")  # GLOBAL tabnanny.check, REDUCE
    with pytest.raises(UnsafeCheckpoint):
        load_checkpoint(path)
    assert "tabnanny" not in sys.modules


# ---------------------------------------------------------------- saving and the digest


def test_save_checkpoint_writes_the_mvsnet_pytorch_format(tmp_path, trained_like):
    path = save_checkpoint(trained_like, tmp_path / "out" / "model_000003.ckpt", epoch=3)
    assert path == tmp_path / "out" / "model_000003.ckpt"
    raw = torch.load(path, weights_only=True)
    assert raw["epoch"] == 3
    assert list(raw["model"]) == ["module." + k for k in trained_like.state_dict()]
    for key, value in trained_like.state_dict().items():
        assert torch.equal(raw["model"]["module." + key], value), key


def test_save_checkpoint_keeps_extra_entries(tmp_path, trained_like):
    extra = {"optimizer": {"param_groups": [{"lr": 0.001}]}}
    raw = torch.load(save_checkpoint(trained_like, tmp_path / "x.ckpt", extra=extra), weights_only=True)
    assert raw["optimizer"] == extra["optimizer"]


def test_save_then_load_round_trips_every_tensor(tmp_path, trained_like):
    path = save_checkpoint(trained_like, tmp_path / "roundtrip.ckpt")
    _assert_loaded(load_checkpoint(path), trained_like)


def test_save_checkpoint_leaves_no_temporary_file_and_replaces_an_old_one(tmp_path, trained_like):
    path = tmp_path / "model.ckpt"
    save_checkpoint(MVSNet(), path)
    save_checkpoint(trained_like, path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.ckpt"]
    assert state_dict_digest(load_checkpoint(path)) == state_dict_digest(trained_like)


def test_state_dict_digest_is_a_sha256_hex_string_stable_across_copies(tmp_path, trained_like):
    digest = state_dict_digest(trained_like)
    assert re.fullmatch(r"[0-9a-f]{64}", digest)
    copy = load_checkpoint(save_checkpoint(trained_like, tmp_path / "copy.ckpt"))
    assert state_dict_digest(copy) == digest


@pytest.mark.parametrize(
    "key",
    ["feature.conv0.conv.weight", "cost_regularization.prob.bias", "feature.conv6.bn.running_var",
     "cost_regularization.conv11.1.running_mean"],
)
def test_state_dict_digest_changes_when_one_value_changes(trained_like, key):
    model = MVSNet()
    model.load_state_dict(trained_like.state_dict())
    before = state_dict_digest(model)
    with torch.no_grad():
        model.state_dict()[key].view(-1)[0] += 1e-3
    assert state_dict_digest(model) != before


def test_state_dict_digest_changes_when_a_step_counter_changes(trained_like):
    model = MVSNet()
    model.load_state_dict(trained_like.state_dict())
    before = state_dict_digest(model)
    model.feature.conv1.bn.num_batches_tracked += 1
    assert state_dict_digest(model) != before
