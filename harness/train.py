"""Training MVSNet on synthetic scenes: ``python -m harness train``.

Scenes come from ``harness.data.synthetic`` (random slanted textured planes, DTU-like rigs,
per-view brightness changes), rendered on the training device into a pool once, with seeds
``TRAIN_SEEDS``; held-out seeds (``HELD_OUT_SEEDS``) are never trained on. The loss is the
original's: smooth L1 on depth over valid ground-truth pixels. Checkpoints are MVSNet_pytorch's
format; a separate state file (optimizer, step, RNG) makes runs resumable. Seeded throughout.
"""

from __future__ import annotations

import json
import math
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch.nn import functional as F

from harness.data.scenes import scene_views
from harness.data.synthetic import SceneSpec, render_scene
from harness.data.views import make_feed
from harness.errors import InvalidArgument
from harness.fileio import atomic_write_bytes, atomic_write_text
from harness.metrics import depth_metrics
from harness.model.checkpoint import load_checkpoint, save_checkpoint
from harness.model.init import plane_sweep_init
from harness.model.mvsnet import MVSNet

TRAIN_SEEDS = range(10_000, 1_000_000)
HELD_OUT_SEEDS = range(1_000, 1_100)  # never used in training; the bundled scene is seed 0


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 3000
    batch: int = 4
    views: int = 3
    height: int = 256
    width: int = 320
    num_depth: int = 192
    lr: float = 1e-3
    pool: int = 2000  # pre-rendered training scenes
    seed: int = 0
    validate_every: int = 250
    save_every: int = 500
    photometric_jitter: float = 0.15
    init: str = "plane-sweep"  # or "random"
    max_minutes: float = 0.0  # stop (and save) after this much wall time; 0 = no limit

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


def scene_spec(seed: int, config: TrainConfig) -> SceneSpec:
    """The training/held-out scene for ``seed``: the number of planes and the rig vary with it."""
    rng = random.Random(seed)
    return SceneSpec(seed=seed, num_views=config.views, height=config.height, width=config.width,
                     num_rectangles=rng.randint(1, 6), view_spread_deg=(rng.uniform(4, 8), rng.uniform(9, 15)),
                     photometric_jitter=config.photometric_jitter)


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


def train(config: TrainConfig, out: Path, device: torch.device, state_path: Path | None = None,
          log_path: Path | None = None, resume: bool = False) -> dict[str, Any]:
    """Train and write ``out`` (MVSNet_pytorch checkpoint, model only: the shipped weights)."""
    torch.manual_seed(config.seed)
    random.seed(config.seed)
    state_path = state_path or out.with_suffix(".state.pt")
    log_path = log_path or out.with_suffix(".log.jsonl")
    start_step = 0
    if resume and state_path.is_file():
        state = torch.load(state_path, map_location="cpu", weights_only=True)
        model = MVSNet()
        model.load_state_dict(state["model"])
        start_step = int(state["step"])
    else:
        model = plane_sweep_init(MVSNet(), config.seed) if config.init == "plane-sweep" else MVSNet()
        state = None
    model = model.to(device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, betas=(0.9, 0.999))
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["torch_rng"])
        random.setstate(tuple(state["py_rng"]))  # type: ignore[arg-type]

    started = time.perf_counter()
    seeds = [TRAIN_SEEDS[(config.seed * 7919 + i) % len(TRAIN_SEEDS)] for i in range(config.pool)]
    pool = render_batch(seeds, config, device)
    valid = render_batch(list(HELD_OUT_SEEDS[:16]), config, device)
    render_s = time.perf_counter() - started
    out.parent.mkdir(parents=True, exist_ok=True)
    log = log_path.open("a" if resume and start_step > 0 else "w")
    train_started = time.perf_counter()  # the time box covers training, not the scene rendering
    history: list[dict[str, Any]] = []
    for step in range(start_step, config.steps):
        model.train()
        index = torch.randint(0, config.pool, (config.batch,))
        batch = {k: v[index.to(v.device)] for k, v in pool.items()}
        # the original is order-free in the source views: shuffle them as augmentation
        if config.views > 2:
            order = torch.cat([torch.zeros(1, dtype=torch.long), 1 + torch.randperm(config.views - 1)])
            batch["imgs"], batch["proj_matrices"] = batch["imgs"][:, order], batch["proj_matrices"][:, order]
        train_elapsed = time.perf_counter() - train_started
        for group in optimizer.param_groups:
            group["lr"] = _lr(step, config, train_elapsed)
        pred = model(batch["imgs"], batch["proj_matrices"], batch["depth_values"])
        mask = batch["mask"]
        loss = F.smooth_l1_loss(pred["depth"][mask], batch["depth"][mask], reduction="mean")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
        optimizer.step()
        out_of_time = config.max_minutes > 0 and time.perf_counter() - train_started > 60 * config.max_minutes
        entry: dict[str, Any] = {"step": step + 1, "loss": float(loss.detach()), "lr": optimizer.param_groups[0]["lr"],
                                 "elapsed_s": round(time.perf_counter() - started, 1)}
        last = step + 1 == config.steps or out_of_time
        if (step + 1) % config.validate_every == 0 or last:
            entry["valid"] = evaluate(model, valid)
            print(f"step {step + 1:>6}  loss {entry['loss']:7.3f}  valid mae {entry['valid']['mae_mm']:6.2f} mm  "
                  f"thres8mm {entry['valid']['thres8mm']:.3f}  ({entry['elapsed_s']} s)", flush=True)
        log.write(json.dumps(entry) + "\n")
        history.append(entry)
        if (step + 1) % config.save_every == 0 or last:
            buffer_state = {"model": {k: v.cpu() for k, v in model.state_dict().items()},
                            "optimizer": optimizer.state_dict(), "step": step + 1,
                            "torch_rng": torch.get_rng_state(), "py_rng": list(random.getstate()),
                            "config": asdict(config)}
            import io

            buffer = io.BytesIO()
            torch.save(buffer_state, buffer)
            atomic_write_bytes(state_path, buffer.getvalue())
            save_checkpoint(model.cpu().eval(), out, epoch=step + 1,
                            extra={"trained_by": "python -m harness train", "config": json.dumps(asdict(config))})
            model.to(device)
        if out_of_time:
            print(f"stopping at step {step + 1}: --max-minutes {config.max_minutes} reached", flush=True)
            break
    log.close()
    summary = {"config": asdict(config), "render_s": round(render_s, 1), "train_s": round(time.perf_counter() - started, 1),
               "final": history[-1] if history else {}, "checkpoint": str(out)}
    atomic_write_text(out.with_suffix(".summary.json"), json.dumps(summary, indent=2, default=str))
    load_checkpoint(out)  # the shipped file must load through the public loader
    return summary
