"""Training MVSNet on synthetic scenes: ``python -m harness train``.

Scenes come from a family of ``harness.data.families`` (``wide`` by default: every rig kind,
occluders at several depths, planes up to grazing angles, textures at several scales, per-view
gain and noise; ``classic``: the bundled weights' distribution), one spec per seed, rendered on
the training device into a pool once, with seeds ``TRAIN_SEEDS``; held-out seeds
(``HELD_OUT_SEEDS``, and the ``independent`` family's) are never trained on. Each step uses
``min_views``..``views`` views of its scenes (reference first, sources shuffled). The loss is the
original's: smooth L1 on depth over valid ground-truth pixels.

The run goes in chunks of ``save_every`` steps: after each one the checkpoint (MVSNet_pytorch's
format, the model only) and a state file next to it (model, optimizer, step, RNG states, the
training time spent) are written atomically, the per-step JSON log is flushed and one line
(step, loss, steps/s, ETA) is printed and flushed, so a detached run can be polled. ``resume``
continues from the state file with the same sample order (bit for bit on the CPU; on a GPU up to
cuDNN's own nondeterminism). ``max_minutes`` bounds the training time of the whole run, resumes
included, and stops with a checkpoint; so do SIGINT and SIGTERM (the step under way finishes,
is saved, and ``Interrupted`` is raised afterwards). Seeded throughout.
"""

from __future__ import annotations

import io
import json
import math
import random
import signal
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch.nn import functional as F

from harness.data.families import HELD_OUT_SEEDS, TRAIN_SEEDS, check_family, family_spec, held_out_seeds
from harness.data.scenes import scene_views
from harness.data.synthetic import SceneSpec, render_scene
from harness.data.views import make_feed
from harness.errors import Interrupted, InvalidArgument
from harness.fileio import atomic_write_bytes, atomic_write_text
from harness.metrics import depth_metrics
from harness.model.checkpoint import load_checkpoint, save_checkpoint
from harness.model.init import plane_sweep_init
from harness.model.mvsnet import MVSNet

__all__ = ["HELD_OUT_SEEDS", "TRAIN_SEEDS", "TrainConfig", "evaluate", "render_batch", "scene_spec", "train"]

#: Fields a resumed run may change (the others decide the data, the model or the sample order).
RESUMABLE_CHANGES = ("steps", "max_minutes", "validate_every", "save_every", "valid_scenes")
#: The shipped checkpoint's size limit (MVSNet is 1.4 MB in MVSNet_pytorch's format).
MAX_CHECKPOINT_BYTES = 2 * 1024 * 1024


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 3000
    batch: int = 4
    views: int = 5  # views rendered per scene, the most a step uses
    min_views: int = 3  # the fewest a step uses (each step draws its count in min_views..views)
    height: int = 256
    width: int = 320
    num_depth: int = 192
    lr: float = 1e-3
    pool: int = 2000  # pre-rendered training scenes
    seed: int = 0
    validate_every: int = 250
    valid_scenes: int = 16  # held-out scenes of the family that validate the run (the first of its held-out seeds)
    save_every: int = 250  # steps per chunk: checkpoint, state file, log line
    photometric_jitter: float = 0.15  # the classic family's; the others draw their own
    init: str = "plane-sweep"  # or "random"
    max_minutes: float = 0.0  # stop (and save) after this much training time, resumes included; 0 = no limit
    family: str = "wide"  # harness.data.families.TRAINABLE

    @property
    def interval_scale(self) -> float:
        """DTU's 1.06 at D=192, scaled so that the hypotheses always span 425-935 mm."""
        return 1.06 * 192 / self.num_depth

    def __post_init__(self) -> None:
        if self.init not in ("plane-sweep", "random"):
            raise InvalidArgument("train --init", "unknown initialisation", observed=self.init, expected="plane-sweep or random")
        if self.steps < 1 or self.batch < 1 or self.pool < self.batch:
            raise InvalidArgument("train", "inconsistent sizes", observed=f"steps {self.steps}, batch {self.batch}, pool {self.pool}",
                                  expected="steps >= 1, batch >= 1, pool >= batch")
        if not 2 <= self.min_views <= self.views:
            raise InvalidArgument("train --min-views", "view counts out of order",
                                  observed=f"--min-views {self.min_views} --views {self.views}",
                                  expected="2 <= min-views <= views", fix="pass e.g. --views 5 --min-views 3")
        if not 1 <= self.valid_scenes <= 20:
            raise InvalidArgument("train", "validation scenes out of range", observed=self.valid_scenes, expected="1..20",
                                  fix="keep the default 16 (accuracy measures from the 21st held-out seed on)")
        if self.validate_every < 1 or self.save_every < 1 or self.max_minutes < 0 or not math.isfinite(self.max_minutes):
            raise InvalidArgument("train", "chunk sizes must be >= 1 and --max-minutes a finite number >= 0",
                                  observed=f"validate every {self.validate_every}, save every {self.save_every}, "
                                           f"max minutes {self.max_minutes}", expected="e.g. 250, 250 and 10",
                                  fix="pass --save-every 250 --validate-every 250 --max-minutes 10 (0: no time limit)")
        check_family(self.family, trainable=True)


def scene_spec(seed: int, config: TrainConfig) -> SceneSpec:
    """The training/held-out scene for ``seed`` in the config's family, with its shape."""
    return family_spec(config.family, seed, config.views, config.height, config.width, config.photometric_jitter)


def render_batch(seeds: list[int], config: TrainConfig, device: torch.device) -> dict[str, torch.Tensor]:
    """Stacked feeds and ground truth for ``seeds``: imgs, proj_matrices, depth_values, depth, mask."""
    feeds = []
    for seed in seeds:
        views = scene_views(render_scene(scene_spec(seed, config), device=device))
        feed = make_feed(views, config.num_depth, config.interval_scale)
        assert views.depth is not None and views.mask is not None
        feed["depth"], feed["mask"] = views.depth[None], views.mask[None]
        feeds.append(feed)
    return {k: torch.cat([f[k] for f in feeds]).to(device) for k in feeds[0]}


def _lr(step: int, config: TrainConfig, elapsed_s: float = 0.0) -> float:
    """Linear warm-up, then cosine decay to 5 %; with a time box the decay follows whichever
    of the step count and the wall time is further along, so a time-boxed run still anneals."""
    warmup = 100
    if step < warmup:
        return config.lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, config.steps - warmup)
    if config.max_minutes > 0:
        progress = max(progress, elapsed_s / (60 * config.max_minutes))
    progress = min(1.0, progress)
    return config.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress)))


@torch.no_grad()
def evaluate(model: MVSNet, data: dict[str, torch.Tensor]) -> dict[str, float]:
    model.eval()
    totals: dict[str, float] = {}
    count = data["imgs"].shape[0]
    for i in range(count):
        out = model(data["imgs"][i:i + 1], data["proj_matrices"][i:i + 1], data["depth_values"][i:i + 1])
        metrics = depth_metrics(out["depth"][0].float().cpu(), data["depth"][i].cpu(), data["mask"][i].cpu(),
                                out["photometric_confidence"][0].float().cpu())
        for key, value in metrics.items():
            totals[key] = totals.get(key, 0.0) + float(value) / count
    return totals


def _state_bytes(model: MVSNet, optimizer: torch.optim.Optimizer, step: int, train_s: float,
                 config: TrainConfig) -> bytes:
    state = {"model": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
             "optimizer": optimizer.state_dict(), "step": step, "train_s": train_s,
             "torch_rng": torch.get_rng_state(), "py_rng": list(random.getstate()), "config": asdict(config)}
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def _read_state(path: Path, config: TrainConfig) -> dict[str, Any]:
    """The state file at ``path``, refused (with the fields that differ) when it was written by
    another data/model/sample-order configuration than ``config``."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        saved = dict(state["config"])
        int(state["step"])
    except Exception as exc:  # noqa: BLE001 - torch's unpickler raises many kinds on a damaged file
        raise InvalidArgument(str(path), "unreadable training state", observed=f"{type(exc).__name__}: {exc}"[:200],
                              expected="a state file written by python -m harness train",
                              fix="delete it (or drop --resume) to start afresh") from None
    saved.setdefault("family", "classic")  # written before the families existed
    saved.setdefault("min_views", saved.get("views", config.views))
    mine = asdict(config)
    differ = [f"{k} {saved.get(k)!r} -> {mine[k]!r}" for k in mine
              if k not in RESUMABLE_CHANGES and saved.get(k) != mine[k]]
    if differ:
        raise InvalidArgument(str(path), "cannot resume: the state was written with other settings",
                              observed="; ".join(differ),
                              expected=f"the same options as the run that wrote it (only {', '.join(RESUMABLE_CHANGES)} may change)",
                              fix="pass the saved values again, or drop --resume (or --out elsewhere) to start a new run")
    return state


def _kept_log_lines(log_path: Path, step: int) -> str:
    """The log's lines up to ``step`` (a run stopped after writing lines its state does not hold)."""
    if not log_path.is_file():
        return ""
    kept = []
    for line in log_path.read_text().splitlines():
        try:
            if int(json.loads(line)["step"]) <= step:
                kept.append(line + "\n")
        except (ValueError, KeyError, TypeError):
            continue  # a line cut short by a kill
    return "".join(kept)


class _StopSignals:
    """SIGINT/SIGTERM set a flag for the block instead of raising: the loop ends its step, saves
    and raises ``Interrupted`` itself. Outside the main thread signals cannot be caught; nothing changes."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _StopSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handler)
        return self

    def _handler(self, signum: int, frame: object) -> None:
        self.signum = signum

    def __exit__(self, *exc: object) -> None:
        for sig, old in self._previous.items():
            signal.signal(sig, old)


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.0f} s"


def train(config: TrainConfig, out: Path, device: torch.device, state_path: Path | None = None,
          log_path: Path | None = None, resume: bool = False) -> dict[str, Any]:
    """Train and write ``out`` (MVSNet_pytorch checkpoint, model only: the shipped weights)."""
    torch.manual_seed(config.seed)
    random.seed(config.seed)
    state_path = state_path or out.with_suffix(".state.pt")
    log_path = log_path or out.with_suffix(".log.jsonl")
    start_step, spent_s = 0, 0.0
    state = _read_state(state_path, config) if resume and state_path.is_file() else None
    if resume and state is None:
        print(f"no state file {state_path}: starting at step 1", flush=True)
    if state is not None:
        model = MVSNet()
        model.load_state_dict(state["model"])
        start_step, spent_s = int(state["step"]), float(state.get("train_s", 0.0))
        if start_step >= config.steps or (config.max_minutes > 0 and spent_s >= 60 * config.max_minutes):
            return _finished(config, out, state_path, model, start_step, spent_s)
    else:
        model = plane_sweep_init(MVSNet(), config.seed) if config.init == "plane-sweep" else MVSNet()
    model = model.to(device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, betas=(0.9, 0.999))
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["torch_rng"])
        random.setstate(tuple(state["py_rng"]))  # type: ignore[arg-type]

    print(f"rendering {config.pool} + {config.valid_scenes} {config.family} scenes ({config.views} views, "
          f"{config.height}x{config.width}) on {device}", flush=True)
    started = time.perf_counter()
    seeds = [TRAIN_SEEDS[(config.seed * 7919 + i) % len(TRAIN_SEEDS)] for i in range(config.pool)]
    pool = render_batch(seeds, config, device)
    valid = render_batch(list(held_out_seeds(config.family)[:config.valid_scenes]), config, device)
    render_s = time.perf_counter() - started
    out.parent.mkdir(parents=True, exist_ok=True)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    kept = _kept_log_lines(log_path, start_step) if state is not None else ""
    log = log_path.open("w")
    log.write(kept)
    print(f"family {config.family}, {config.pool} scenes rendered in {render_s:.1f} s; training steps "
          f"{start_step + 1}..{config.steps}, batch {config.batch}, {config.min_views}-{config.views} views, "
          f"{config.height}x{config.width}, D={config.num_depth}"
          + (f", at most {config.max_minutes} min of training" if config.max_minutes > 0 else ""), flush=True)

    def save(step: int, train_s: float) -> None:
        atomic_write_bytes(state_path, _state_bytes(model, optimizer, step, train_s, config))
        save_checkpoint(model, out, epoch=step,
                        extra={"trained_by": "python -m harness train", "config": json.dumps(asdict(config))})

    train_started = time.perf_counter()  # the time box covers training, not the scene rendering
    history: list[dict[str, Any]] = []
    chunk_losses: list[float] = []
    chunk_started, stopped = train_started, "steps"
    with _StopSignals() as signals:
        for step in range(start_step, config.steps):
            model.train()
            index = torch.randint(0, config.pool, (config.batch,))
            batch = {k: v[index.to(v.device)] for k, v in pool.items()}
            # the original is order-free in the source views: shuffle them as augmentation, and use
            # min_views..views of them (the count drawn only when there is a choice)
            if config.views > 2:
                order = torch.cat([torch.zeros(1, dtype=torch.long), 1 + torch.randperm(config.views - 1)])
                if config.min_views < config.views:
                    order = order[:int(torch.randint(config.min_views, config.views + 1, ()))]
                order = order.to(batch["imgs"].device)
                batch["imgs"], batch["proj_matrices"] = batch["imgs"][:, order], batch["proj_matrices"][:, order]
            train_s = spent_s + time.perf_counter() - train_started
            for group in optimizer.param_groups:
                group["lr"] = _lr(step, config, train_s)
            pred = model(batch["imgs"], batch["proj_matrices"], batch["depth_values"])
            mask = batch["mask"]
            loss = F.smooth_l1_loss(pred["depth"][mask], batch["depth"][mask], reduction="mean")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
            optimizer.step()
            train_s = spent_s + time.perf_counter() - train_started
            if signals.signum is not None:
                stopped = signal.Signals(signals.signum).name
            elif config.max_minutes > 0 and train_s > 60 * config.max_minutes:
                stopped = "max-minutes"
            entry: dict[str, Any] = {"step": step + 1, "loss": float(loss.detach()), "lr": optimizer.param_groups[0]["lr"],
                                     "elapsed_s": round(time.perf_counter() - started, 1), "train_s": round(train_s, 1)}
            chunk_losses.append(entry["loss"])
            last = step + 1 == config.steps or stopped != "steps"
            if (step + 1) % config.validate_every == 0 or last:
                entry["valid"] = evaluate(model, valid)
            log.write(json.dumps(entry) + "\n")
            history.append(entry)
            if (step + 1) % config.save_every == 0 or last:
                save(step + 1, train_s)
                log.flush()
                now = time.perf_counter()
                rate = len(chunk_losses) / max(now - chunk_started, 1e-9)
                eta = (config.steps - step - 1) / rate
                if config.max_minutes > 0:
                    eta = min(eta, max(0.0, 60 * config.max_minutes - train_s))
                line = (f"step {step + 1:>6}/{config.steps}  loss {sum(chunk_losses) / len(chunk_losses):7.3f}  "
                        f"{rate:6.2f} steps/s  ETA {_minutes(0.0 if last else eta)}  (training {_minutes(train_s)})")
                if "valid" in entry:
                    line += f"  valid mae {entry['valid']['mae_mm']:.2f} mm  thres8mm {entry['valid']['thres8mm']:.3f}"
                print(line, flush=True)
                chunk_losses, chunk_started = [], now
            if stopped != "steps":
                print(f"stopping at step {step + 1}: "
                      + (f"--max-minutes {config.max_minutes} reached" if stopped == "max-minutes" else f"{stopped} received")
                      + f"; resume with --resume (state {state_path})", flush=True)
                break
    log.close()
    summary = {"config": asdict(config), "render_s": round(render_s, 1), "train_s": round(time.perf_counter() - started, 1),
               "steps_done": history[-1]["step"], "training_minutes": round(history[-1]["train_s"] / 60, 2),
               "stopped": stopped, "final": history[-1], "checkpoint": str(out)}
    _write_summary(out, summary)
    if stopped in ("SIGINT", "SIGTERM"):
        raise Interrupted(signal.Signals[stopped])
    return summary


def _write_summary(out: Path, summary: dict[str, Any]) -> None:
    atomic_write_text(out.with_suffix(".summary.json"), json.dumps(summary, indent=2, default=str))
    load_checkpoint(out)  # the shipped file must load through the public loader
    size = out.stat().st_size
    if size > MAX_CHECKPOINT_BYTES:
        raise InvalidArgument(str(out), "checkpoint larger than the shipped weights may be", observed=f"{size} bytes",
                              expected=f"<= {MAX_CHECKPOINT_BYTES} bytes", fix="save the model only (no optimizer state)")


def _finished(config: TrainConfig, out: Path, state_path: Path, model: MVSNet, step: int, spent_s: float) -> dict[str, Any]:
    """A resume with nothing left to train: the files stay as the run that finished wrote them
    (the checkpoint and summary are rewritten from the state only when one is missing)."""
    why = "steps" if step >= config.steps else "max-minutes"
    print(f"nothing to do: {state_path} is at step {step} of {config.steps} after {_minutes(spent_s)} of training", flush=True)
    written = out.with_suffix(".summary.json")
    if out.is_file() and written.is_file():
        load_checkpoint(out)
        return dict(json.loads(written.read_text()))
    if not out.is_file():
        save_checkpoint(model, out, epoch=step,
                        extra={"trained_by": "python -m harness train", "config": json.dumps(asdict(config))})
    summary = {"config": asdict(config), "render_s": 0.0, "train_s": 0.0, "steps_done": step,
               "training_minutes": round(spent_s / 60, 2), "stopped": why, "final": {}, "checkpoint": str(out)}
    _write_summary(out, summary)
    return summary
