"""Unit tests of harness/train.py: configuration, seeded scenes, batches, and tiny training runs on
the CPU that write a loadable checkpoint, a resumable state, a log and a summary."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from harness.errors import Interrupted, InvalidArgument
from harness.model.checkpoint import load_checkpoint, state_dict_digest
from harness.model.mvsnet import MVSNet
from harness.train import (
    HELD_OUT_SEEDS,
    MAX_CHECKPOINT_BYTES,
    TRAIN_SEEDS,
    TrainConfig,
    render_batch,
    scene_spec,
    train,
)

CPU = torch.device("cpu")
# 64x96 images (16x24 depth maps), D=16: the smallest sizes MVSNet takes (D, h, w divisible by 8)
TINY = {"batch": 1, "pool": 2, "height": 64, "width": 96, "num_depth": 16, "validate_every": 1000,
        "save_every": 1000, "valid_scenes": 2, "views": 3, "min_views": 3}


def tiny(steps: int = 3, **kwargs) -> TrainConfig:
    return TrainConfig(steps=steps, **{**TINY, **kwargs})


def _log(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict:
    """One 3-step run: {'out': checkpoint path, 'summary': returned summary}."""
    out = tmp_path_factory.mktemp("train") / "w.ckpt"
    summary = train(tiny(3), out, CPU)
    return {"out": out, "summary": summary}


# -- configuration -----------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs", [{"steps": 0}, {"batch": 0}, {"batch": 4, "pool": 3}])
def test_train_config_refuses_inconsistent_sizes(kwargs):
    with pytest.raises(InvalidArgument, match="inconsistent sizes") as info:
        TrainConfig(**kwargs)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize(("num_depth", "scale"), [(192, 1.06), (48, 4.24), (16, 12.72)])
def test_interval_scale_keeps_the_dtu_depth_span(num_depth, scale):
    config = TrainConfig(num_depth=num_depth)
    assert config.interval_scale == pytest.approx(scale)
    assert config.interval_scale == pytest.approx(1.06 * 192 / num_depth)


def test_train_config_defaults_are_consistent():
    config = TrainConfig()
    assert config.pool >= config.batch and config.steps >= 1
    assert config.init == "plane-sweep" and config.max_minutes == 0.0


# -- seeds and scenes --------------------------------------------------------------------------

def test_scene_spec_is_deterministic_per_seed():
    config = tiny()
    assert scene_spec(10_123, config) == scene_spec(10_123, config)


def test_scene_spec_varies_with_the_seed_and_follows_the_config():
    config = tiny(photometric_jitter=0.1, views=4, family="classic")
    specs = [scene_spec(seed, config) for seed in range(10_000, 10_020)]
    assert len({(s.num_rectangles, s.view_spread_deg) for s in specs}) > 1
    for seed, spec in zip(range(10_000, 10_020), specs):
        assert spec.seed == seed
        assert (spec.num_views, spec.height, spec.width) == (4, 64, 96)
        assert spec.photometric_jitter == 0.1
        assert 1 <= spec.num_rectangles <= 6
        low, high = spec.view_spread_deg
        assert 4 <= low <= 8 and 9 <= high <= 15


def test_held_out_seeds_are_never_training_seeds_and_exclude_the_bundled_scene():
    assert len(HELD_OUT_SEEDS) > 0
    assert not set(HELD_OUT_SEEDS) & set(range(TRAIN_SEEDS.start, TRAIN_SEEDS.start + 1000))
    assert max(HELD_OUT_SEEDS) < min(TRAIN_SEEDS) or min(HELD_OUT_SEEDS) > max(TRAIN_SEEDS)
    assert 0 not in HELD_OUT_SEEDS and 0 not in TRAIN_SEEDS


def test_render_batch_shapes_and_dtypes():
    config = tiny(views=3, num_depth=16)
    batch = render_batch([10_000, 10_001], config, CPU)
    assert batch["imgs"].shape == (2, 3, 3, 64, 96)
    assert batch["proj_matrices"].shape == (2, 3, 4, 4)
    assert batch["depth_values"].shape == (2, 16)
    assert batch["depth"].shape == (2, 16, 24)
    assert batch["mask"].shape == (2, 16, 24)
    assert batch["mask"].dtype == torch.bool and batch["mask"].any()
    assert batch["imgs"].dtype == torch.float32
    assert 0.0 <= float(batch["imgs"].min()) and float(batch["imgs"].max()) <= 1.0


def test_render_batch_depth_hypotheses_span_425_to_935_mm():
    config = tiny(num_depth=16)
    depth_values = render_batch([10_000], config, CPU)["depth_values"][0]
    assert float(depth_values[0]) == pytest.approx(425.0)
    step = float(depth_values[1] - depth_values[0])
    assert step == pytest.approx(2.5 * config.interval_scale, rel=1e-5)
    assert float(depth_values[0]) + 16 * step == pytest.approx(935.0, abs=2.0)


def test_render_batch_is_deterministic_and_differs_between_seeds():
    config = tiny()
    a, b = render_batch([10_005], config, CPU), render_batch([10_005], config, CPU)
    assert all(torch.equal(a[k], b[k]) for k in a)
    c = render_batch([10_006], config, CPU)
    assert not torch.equal(a["imgs"], c["imgs"])


# -- training runs -----------------------------------------------------------------------------

def test_train_writes_a_loadable_checkpoint_in_mvsnet_pytorch_format(trained):
    out = trained["out"]
    assert out.stat().st_size <= MAX_CHECKPOINT_BYTES
    payload = torch.load(out, map_location="cpu", weights_only=True)
    assert payload["epoch"] == 3
    keys = list(payload["model"])
    assert keys and all(k.startswith("module.") for k in keys)
    assert {k.removeprefix("module.") for k in keys} == set(MVSNet().state_dict())
    model = load_checkpoint(out)
    assert not model.training
    assert json.loads(payload["config"])["steps"] == 3


def test_train_changes_the_weights(trained):
    from harness.model.init import plane_sweep_init

    assert state_dict_digest(load_checkpoint(trained["out"])) != state_dict_digest(plane_sweep_init(MVSNet(), 0))


def test_train_writes_a_state_file_to_resume_from(trained):
    state = torch.load(trained["out"].with_suffix(".state.pt"), map_location="cpu", weights_only=True)
    assert state["step"] == 3
    assert {"model", "optimizer", "torch_rng", "py_rng", "config"} <= set(state)
    assert state["config"]["steps"] == 3


def test_train_logs_one_line_per_step_with_finite_losses(trained):
    entries = _log(trained["out"].with_suffix(".log.jsonl"))
    assert [e["step"] for e in entries] == [1, 2, 3]
    assert all(math.isfinite(e["loss"]) and e["loss"] >= 0 for e in entries)
    assert all(e["lr"] > 0 for e in entries)
    assert "valid" in entries[-1]  # the last step is always validated
    assert math.isfinite(entries[-1]["valid"]["mae_mm"])


def test_train_writes_a_summary(trained):
    out = trained["out"]
    summary = json.loads(out.with_suffix(".summary.json").read_text())
    assert summary["final"]["step"] == 3
    assert summary["checkpoint"] == str(out)
    assert summary["config"]["steps"] == 3
    assert trained["summary"]["final"]["step"] == 3
    assert math.isfinite(summary["final"]["loss"])


def test_resume_continues_from_the_saved_step(tmp_path):
    out = tmp_path / "w.ckpt"
    train(tiny(2), out, CPU)
    assert [e["step"] for e in _log(out.with_suffix(".log.jsonl"))] == [1, 2]
    summary = train(tiny(4), out, CPU, resume=True)
    assert [e["step"] for e in _log(out.with_suffix(".log.jsonl"))] == [1, 2, 3, 4]
    state = torch.load(out.with_suffix(".state.pt"), map_location="cpu", weights_only=True)
    assert state["step"] == 4
    assert torch.load(out, map_location="cpu", weights_only=True)["epoch"] == 4
    assert summary["final"]["step"] == 4


def test_resume_gives_the_weights_of_an_uninterrupted_run_bit_for_bit(tmp_path):
    # the wide family, 2-3 views drawn per step and chunks of 2: stopped after the first chunk and
    # resumed, the run sees the same samples in the same order and ends with the same bits
    config = {"save_every": 2, "min_views": 2, "pool": 3}
    straight = tmp_path / "straight" / "w.ckpt"
    train(tiny(3, **config), straight, CPU)
    resumed = tmp_path / "resumed" / "w.ckpt"
    train(tiny(2, **config), resumed, CPU)
    train(tiny(3, **config), resumed, CPU, resume=True)
    a, b = (torch.load(p.with_suffix(".state.pt"), map_location="cpu", weights_only=True) for p in (straight, resumed))
    assert a["step"] == b["step"] == 3
    for name in a["model"]:
        assert torch.equal(a["model"][name], b["model"][name]), name
    assert torch.equal(a["torch_rng"], b["torch_rng"])
    for index, moments in a["optimizer"]["state"].items():
        for key, value in moments.items():
            assert torch.equal(value, b["optimizer"]["state"][index][key]), (index, key)
    assert [e["loss"] for e in _log(straight.with_suffix(".log.jsonl"))] == \
        [e["loss"] for e in _log(resumed.with_suffix(".log.jsonl"))]


def test_resume_without_a_state_file_starts_from_step_one(tmp_path):
    out = tmp_path / "w.ckpt"
    train(tiny(2), out, CPU, resume=True)
    assert [e["step"] for e in _log(out.with_suffix(".log.jsonl"))] == [1, 2]


def test_max_minutes_stops_after_the_first_step_and_still_saves(tmp_path, capsys):
    out = tmp_path / "w.ckpt"
    summary = train(tiny(50, max_minutes=1e-6), out, CPU)
    assert [e["step"] for e in _log(out.with_suffix(".log.jsonl"))] == [1]
    assert "stopping at step 1" in capsys.readouterr().out
    state = torch.load(out.with_suffix(".state.pt"), map_location="cpu", weights_only=True)
    assert state["step"] == 1
    assert torch.load(out, map_location="cpu", weights_only=True)["epoch"] == 1
    load_checkpoint(out)
    assert summary["final"]["step"] == 1 and "valid" in summary["final"]


def test_train_with_separate_state_and_log_paths(tmp_path):
    out, state, log = tmp_path / "w.ckpt", tmp_path / "s" / "state.pt", tmp_path / "l" / "log.jsonl"
    state.parent.mkdir()
    log.parent.mkdir()
    train(tiny(1), out, CPU, state_path=state, log_path=log)
    assert state.is_file() and len(_log(log)) == 1
    assert not out.with_suffix(".state.pt").exists()


def test_a_fresh_run_over_an_earlier_one_starts_a_new_log(tmp_path):
    # without --resume the run starts again at step 1: its log must not read 1, 2, 1
    out = tmp_path / "w.ckpt"
    train(tiny(2), out, CPU)
    train(tiny(1), out, CPU)
    assert [e["step"] for e in _log(out.with_suffix(".log.jsonl"))] == [1]


# -- chunks, signals, time box, resume checks ----------------------------------------------------------

def test_each_chunk_prints_a_flushed_line_and_a_signal_stops_after_saving(tmp_path, monkeypatch, capsys):
    import os
    import signal

    import harness.train as module

    real_lr = module._lr

    def lr_then_term(step, config, elapsed_s=0.0):
        if step == 1:  # during the second step: SIGTERM as `kill` sends it
            os.kill(os.getpid(), signal.SIGTERM)
        return real_lr(step, config, elapsed_s)

    monkeypatch.setattr(module, "_lr", lr_then_term)
    before = signal.getsignal(signal.SIGTERM)
    out = tmp_path / "w.ckpt"
    with pytest.raises(Interrupted) as info:
        train(tiny(6, save_every=1), out, CPU)
    assert info.value.signum == signal.SIGTERM
    printed = capsys.readouterr().out
    lines = [line for line in printed.splitlines() if line.startswith("step ")]
    assert len(lines) == 2 and lines[0].split()[1] == "1/6" and lines[1].split()[1] == "2/6"
    assert "steps/s" in lines[0] and "ETA" in lines[0] and "loss" in lines[0]
    assert "stopping at step 2: SIGTERM received; resume with --resume" in printed
    assert torch.load(out.with_suffix(".state.pt"), map_location="cpu", weights_only=True)["step"] == 2
    assert torch.load(out, map_location="cpu", weights_only=True)["epoch"] == 2
    assert [e["step"] for e in _log(out.with_suffix(".log.jsonl"))] == [1, 2]
    assert signal.getsignal(signal.SIGTERM) == before  # the handler came back


def test_resume_refuses_a_state_written_with_other_settings(trained):
    with pytest.raises(InvalidArgument, match="cannot resume") as info:
        train(tiny(5, family="classic", batch=2), trained["out"], CPU, resume=True)
    text = str(info.value)
    assert "family 'classic' -> 'classic'" not in text and "family 'wide' -> 'classic'" in text and "batch 1 -> 2" in text
    assert "drop --resume" in text


def test_resume_refuses_an_unreadable_state_file(tmp_path):
    out = tmp_path / "w.ckpt"
    out.with_suffix(".state.pt").write_bytes(b"not a state")
    with pytest.raises(InvalidArgument, match="unreadable training state"):
        train(tiny(2), out, CPU, resume=True)


def test_resume_at_the_end_has_nothing_to_do_and_keeps_the_files(trained, capsys):
    out = trained["out"]
    before = out.read_bytes(), out.with_suffix(".summary.json").read_text()
    summary = train(tiny(3), out, CPU, resume=True)
    assert "nothing to do" in capsys.readouterr().out
    assert (out.read_bytes(), out.with_suffix(".summary.json").read_text()) == before
    assert summary["final"]["step"] == 3


def test_max_minutes_counts_the_training_time_of_earlier_chunks(trained, tmp_path):
    # a state 1 ms short of --max-minutes 2: the resumed run does one step (longer than 1 ms) and stops
    out = tmp_path / "w.ckpt"
    state = torch.load(trained["out"].with_suffix(".state.pt"), map_location="cpu", weights_only=True)
    state["train_s"] = 119.999
    torch.save(state, out.with_suffix(".state.pt"))
    summary = train(tiny(9, max_minutes=2.0), out, CPU, resume=True)
    assert summary["stopped"] == "max-minutes" and summary["steps_done"] == 4
    assert summary["training_minutes"] >= 2.0


def test_config_refuses_a_held_out_family_and_views_out_of_order():
    with pytest.raises(InvalidArgument, match="held-out family cannot be trained on") as info:
        TrainConfig(family="independent")
    assert "accuracy --family independent" in str(info.value)
    with pytest.raises(InvalidArgument, match="unknown scene family"):
        TrainConfig(family="dtu")
    with pytest.raises(InvalidArgument, match="view counts out of order"):
        TrainConfig(views=3, min_views=4)
    with pytest.raises(InvalidArgument, match="chunk sizes"):
        TrainConfig(save_every=0)


def test_the_cli_says_why_a_family_cannot_be_trained_on(tmp_path, capsys):
    from harness.cli import main

    assert main(["train", "--out", str(tmp_path / "w.ckpt"), "--family", "independent"]) == 2
    assert "held-out family cannot be trained on" in capsys.readouterr().err
    assert not (tmp_path / "w.ckpt").exists()


@pytest.mark.parametrize(("argv", "says"), [
    (["--bogus"], "unknown argument --bogus. Expected: --detach"),
    (["--steps", "0"], "--steps must be a whole number >= 1, got '0'"),
    (["--minutes", "0"], "--minutes must be a number of minutes > 0 (the run's time box), got '0'"),
    (["--out"], "--out needs a value (see --help)"),
])
def test_the_gpu_training_script_refuses_bad_arguments_saying_what_it_takes(argv, says):
    import subprocess

    script = Path(__file__).resolve().parents[1] / ".ci" / "gpu-train.sh"
    done = subprocess.run(["bash", str(script), *argv], capture_output=True, text=True, timeout=30)
    assert done.returncode == 2 and says in done.stderr, done.stderr


def test_the_gpu_training_script_documents_its_steps_and_files():
    import subprocess

    script = Path(__file__).resolve().parents[1] / ".ci" / "gpu-train.sh"
    text = subprocess.run(["bash", str(script), "--help"], capture_output=True, text=True, timeout=30).stdout
    for word in ("train", "evaluate", "summary", "--detach", "--resume", "independent", "classic", "summary.json"):
        assert word in text, word
    assert "set -uo" not in text  # the help ends with the comment block
