"""Calibration: the benign noise of every gate, measured over a corpus of inputs.

A corpus is a list of inputs (``Item``): the named cases on the bundled scene, and scenes of the
project's generator with random rigs (rings and lines of 3-5 cameras), sizes, depth counts,
textureless planes, occluding rectangles and exposure changes, each written as a DTU-format folder
and read back through the harness's DTU reader. The ``held-out`` family draws from other seeds
and other layouts (parallel-camera lines, coarser textures, PNG images, camera files with extra
numbers) and is never used to derive a limit: it measures the false-alarm rate.

Every input is run through every leg this machine can run, against torch strict FP32:
* the parity legs, on the dynamic-shape graphs of the property suite (one export per view count);
  the ``small`` case also on the static graphs the gate runs, over every workaround, exporter
  and variant, and on the backends that consume the model;
* ``ort-vs-ort`` (raw vs simplified graph, sources permuted, world scaled) and ``torch-vs-torch``
  (precomputed inverse, sources permuted, world scaled): the relations the property suite gates;
* ``golden-vs-ort``: ONNX Runtime CPU with one intra-op thread against its default session;
* the per-stage errors of a probe build, per graph precision;
* accuracy against ground truth (percentage points moved), where the input has it.

Each sample is one line of ``samples.jsonl`` in the work folder, and an input is marked done
after its last sample, so an interrupted calibration resumes where it stopped.
"""

from __future__ import annotations

import contextlib
import json
import random
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from harness.accuracy import accuracy_row
from harness.backends import registry
from harness.chain import Chain, Leg, plan_legs
from harness.compare import compare
from harness.convert.mixed import MixedOnnxFromOnnx
from harness.convert.onnx_export import EXPORTERS, ExportConfig, OnnxFromTorch, SimplifiedOnnxFromOnnx
from harness.convert.workarounds import EXPORTABLE, get_workaround
from harness.data.cases import get_case
from harness.data.scenes import scene_views, write_scene
from harness.data.synthetic import SceneSpec, render_scene
from harness.data.views import Views, load_views, make_feed
from harness.errors import BackendUnavailable, InvalidArgument
from harness.gates.limits import family, machine_class
from harness.localize import depth_step, stage_base, stage_errors
from harness.model.inputs import DEPTH_MULTIPLE, SIZE_MULTIPLE
from harness.model.mvsnet import probing
from harness.properties import BOUNDS, EDGE_SEEDS_FROM, RigRunners, permute_sources, scale_rig, seeded_rig

SCHEMA = 1
FAMILIES = ("calibration", "property-rigs", "held-out")
#: Families whose records the limits are derived from (held-out inputs only judge them).
CALIBRATING = ("calibration", "property-rigs")
#: The seeds each family draws from by default: disjoint, so held-out inputs are never calibrated on.
DEFAULT_SEEDS = {"calibration": range(1, 51),
                 "property-rigs": (*range(1, 61), *range(EDGE_SEEDS_FROM, EDGE_SEEDS_FROM + 40)),  # 40 edge-biased
                 "held-out": range(10_001, 10_021)}
#: Statistics kept per sample: the gated ones and the all-pixel ones the report contrasts them with.
RECORDED = ("max_intervals_confident", "p99_intervals_confident", "max_intervals", "p99_intervals", "confident",
            "max_sq_err_stable", "p99_abs_stable", "p99_abs", "agreement", "index_flips", "near_boundary")
#: Workarounds and exporter of the dynamic-shape legs every input runs (the static small case
#: covers every workaround and exporter).
RIG_WORKAROUNDS = ("precomputed", "closed_form")
RIG_EXPORTER: Literal["torchscript"] = "torchscript"
#: The other graphs the property suite runs its FP32 candidates on (harness.properties.property_legs):
#: every input runs them too, so the records cover every graph the gate judges on random rigs.
RIG_EXTRA_FP32 = (("custom_op", "torchscript", "raw"), ("precomputed", "dynamo", "raw"),
                  ("precomputed", "dynamo", "simplified"))
#: Stage probes keep every intermediate volume of both runtimes in memory (about 8 GB at the seed
#: shape): inputs larger than this many pixels x hypotheses are measured without them.
STAGE_BUDGET = 256 * 320 * 96


def recorded(diffs: dict[str, Any]) -> dict[str, dict[str, float]]:
    """The ``RECORDED`` statistics of each output of a ``compare`` result: what a sample keeps."""
    return {name: {m: d.metrics[m] for m in RECORDED if m in d.metrics} for name, d in diffs.items()}


def stage_worst(reference: dict[str, torch.Tensor], candidate: dict[str, torch.Tensor],
                depth_values: torch.Tensor) -> dict[str, float]:
    """Each stage's worst relative error over its views (``stage_base`` names; depth in steps)."""
    worst: dict[str, float] = {}
    for row in stage_errors(reference, candidate, 1.0, depth_step=depth_step(depth_values)):
        base = stage_base(row.stage)
        worst[base] = max(worst.get(base, 0.0), row.relative)
    return worst


@dataclass(frozen=True)
class Item:
    """One input of a corpus: a named case on the bundled scene, or a generated scene folder."""

    id: str
    family: str
    case: str | None = None  # a named case (bundled scene)
    spec: dict[str, Any] | None = None  # SceneSpec fields of a generated scene
    num_depth: int = 0
    layout: str = "dtu"  # how the folder is written: dtu (JPEG), png, extra-cam-numbers; memory: no folder
    scale: float = 1.0  # the world-scaling relation's factor

    @property
    def shape_id(self) -> str:
        if self.case:
            return get_case(self.case).shape_id
        assert self.spec is not None
        return f"{self.spec['num_views']}x{self.spec['height']}x{self.spec['width']}xD{self.num_depth}"


def _multiple(rng: random.Random, low: int, high: int, step: int) -> int:
    return rng.randrange(-(-low // step), high // step + 1) * step


def draw_item(seed: int, family_name: str) -> Item:
    """A generated input, a pure function of (seed, family)."""
    rng = random.Random(f"{family_name}-{seed}")
    held_out = family_name == "held-out"
    spread = rng.uniform(3.0, 12.0)
    spec = {
        "seed": seed, "num_views": rng.choice((3, 3, 4, 5)),
        "height": _multiple(rng, 96, 256, SIZE_MULTIPLE), "width": _multiple(rng, 128, 320, SIZE_MULTIPLE),
        "num_rectangles": rng.randrange(0, 7), "distance": rng.uniform(560.0, 720.0),
        "view_spread_deg": (spread, spread + rng.uniform(0.0, 5.0)),
        "photometric_jitter": rng.choice((0.0, 0.05, 0.15)), "supersample": 1,
        "rig": rng.choice(("ring", "line")) if held_out else "ring",
        "textureless": rng.choice((0.0, 0.0, 0.5, 1.0)) if held_out else rng.choice((0.0, 0.0, 0.4)),
        "texture_scale": rng.choice((0.5, 1.0, 2.5)) if held_out else rng.choice((0.8, 1.0, 1.5)),
    }
    layout = rng.choice(("png", "extra-cam-numbers", "dtu")) if held_out else "dtu"
    return Item(f"{'held' if held_out else 'gen'}-{seed:05d}", family_name, spec=spec,
                num_depth=_multiple(rng, 16, 96, DEPTH_MULTIPLE), layout=layout,
                scale=round(rng.uniform(0.5, 2.0), 3))


def corpus(family_name: str, seeds: Sequence[int], cases: Sequence[str] = ("small", "seed")) -> list[Item]:
    """The named cases first (calibration family only), then one generated input per seed."""
    if family_name not in FAMILIES:
        raise InvalidArgument("corpus family", "unknown", observed=family_name, expected=" or ".join(FAMILIES))
    if family_name == "property-rigs":
        return [rig_item(seed) for seed in seeds]
    named = [Item(f"case-{c}", family_name, case=c, num_depth=get_case(c).num_depth) for c in cases] \
        if family_name == "calibration" else []
    return named + [draw_item(seed, family_name) for seed in seeds]


def rig_item(seed: int) -> Item:
    """A rig of the property suite's full-profile space (rendered in memory, supersampled, no image
    file: what the property suite feeds), a pure function of the seed."""
    rig = seeded_rig(seed, BOUNDS["full"])
    return Item(f"rig-{seed:05d}", "property-rigs", spec=asdict(rig.spec), num_depth=rig.num_depth, layout="memory",
                scale=round(random.Random(f"property-rigs-scale-{seed}").uniform(0.5, 2.0), 3))


def _scene_spec(fields: dict[str, Any]) -> SceneSpec:
    """A SceneSpec from its fields as a record stores them (JSON lists back to tuples)."""
    restored: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()}
    return SceneSpec(**restored)


def write_item(item: Item, root: Path) -> Path:
    """Render a generated input into a DTU-format folder under ``root`` in its layout."""
    assert item.spec is not None
    folder = root / item.id
    if (folder / "pair.txt").is_file():
        return folder
    tmp = root / f".{item.id}.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    write_scene(render_scene(_scene_spec(item.spec)), tmp)
    if item.layout == "png":  # another renderer's images: PNG instead of JPEG
        from PIL import Image

        for jpg in sorted((tmp / "images").glob("*.jpg")):
            Image.open(jpg).save(jpg.with_suffix(".png"))
            jpg.unlink()
    elif item.layout == "extra-cam-numbers":  # "depth_min interval num_depth depth_max", as some DTU exports
        for cam in sorted((tmp / "cams").glob("*_cam.txt")):
            lines = cam.read_text(encoding="utf-8").rstrip("\n").split("\n")
            low, interval = (float(x) for x in lines[-1].split()[:2])
            lines[-1] = f"{low} {interval} 192 {low + interval * 191:.3f}"
            cam.write_text("\n".join(lines) + "\n", encoding="utf-8")
    tmp.rename(folder)
    return folder


def item_views(item: Item, root: Path) -> Views:
    if item.case:
        from harness.data.cases import case_views

        return case_views(get_case(item.case))
    assert item.spec is not None
    if item.layout == "memory":
        return scene_views(render_scene(_scene_spec(item.spec)))
    return load_views(write_item(item, root), num_views=int(item.spec["num_views"]))


def item_feed(item: Item, views: Views) -> dict[str, torch.Tensor]:
    if item.case:
        from harness.data.cases import case_feed

        return case_feed(get_case(item.case), views, with_inverse=True)
    return make_feed(views, item.num_depth, get_case("seed").interval_scale * 192 / item.num_depth, with_inverse=True)


@dataclass
class Calibrator:
    """Runs the corpus through every leg this machine can run; samples go to ``work/samples.jsonl``."""

    chain: Chain
    work: Path
    candidates: Sequence[str] = ()
    static_cases: Sequence[str] = ("small",)
    with_stages: bool = True
    with_golden: bool = True
    with_extra_graphs: bool = True  # RIG_EXTRA_FP32 (a dynamo export per view count)
    model_backends: tuple[str, ...] = ()
    skipped: dict[str, str] = field(default_factory=dict)  # backend -> why it could not run here
    _runners: RigRunners | None = None
    _probe_graphs: dict[tuple, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.work.mkdir(parents=True, exist_ok=True)
        if not self.candidates:
            self.candidates = tuple(n for n in registry.names(candidates_only=True) if registry.available(n) is None)
        self._runners = RigRunners(self.chain, BOUNDS["full"])
        self.model_backends = tuple(
            name for name, spec in registry.specs().items()
            if spec.consumes == "model" and name != "torch-fp32" and registry.available(name) is None
            and (name in self.candidates or not spec.candidate))
        self.samples_path = self.work / "samples.jsonl"

    # -- bookkeeping -----------------------------------------------------------------------------
    def done(self) -> set[str]:
        if not self.samples_path.is_file():
            return set()
        finished = set()
        for line in self.samples_path.read_text(encoding="utf-8").splitlines():
            if line.startswith('{"done"'):
                finished.add(json.loads(line)["done"])
        return finished

    def samples(self) -> list[dict[str, Any]]:
        """Samples of the inputs marked done (a half-measured input is measured again on resume)."""
        if not self.samples_path.is_file():
            return []
        rows = [json.loads(line) for line in self.samples_path.read_text(encoding="utf-8").splitlines() if line.strip()]
        finished = {r["done"] for r in rows if "done" in r}
        return [r for r in rows if "done" not in r and r["item"] in finished]

    def _write(self, rows: list[dict[str, Any]], item: Item) -> None:
        with self.samples_path.open("a", encoding="utf-8") as out:
            for row in rows:
                out.write(json.dumps(row, separators=(",", ":")) + "\n")
            out.write(json.dumps({"done": item.id}) + "\n")
            out.flush()

    @property
    def machine(self) -> str:
        return machine_class(str(self.chain.device))

    # -- one input -------------------------------------------------------------------------------
    def measure(self, item: Item) -> list[dict[str, Any]]:
        views = item_views(item, self.work / "scenes")
        feed = item_feed(item, views)
        reference_feed = {k: v for k, v in feed.items() if k != "inverse_proj_matrices"}
        torch_runner = self.chain.torch_runner("fp32")
        depth_values = feed["depth_values"]
        height, width = feed["imgs"].shape[-2:]
        large = height * width * depth_values.shape[-1] > STAGE_BUDGET  # above the generator's sizes: seed, DTU
        # the stage probes copy the warped and variance volumes (5.8 GB at DTU's size): only where
        # the stages are measured
        with_stages = self.with_stages and not large
        probes: dict[str, torch.Tensor] = {}
        with probing(torch_runner.model) if with_stages else contextlib.nullcontext(probes) as probes:  # type: ignore[attr-defined]
            reference = torch_runner.infer(reference_feed)
        ref_stages = {**{k: v.cpu() for k, v in probes.items()}, **{k: v.cpu() for k, v in reference.items()}}
        gt = (views.depth, views.mask) if views.depth is not None and views.mask is not None else None
        ref_accuracy = accuracy_row(reference, *gt) if gt else None
        rows: list[dict[str, Any]] = []

        def add(pair: str, precision: str, machine: str, leg_id: str, outputs: dict[str, torch.Tensor],
                against: dict[str, torch.Tensor] = reference, accuracy: bool = True) -> None:
            metrics = recorded(compare(against, outputs, None, depth_values=depth_values))
            if accuracy and ref_accuracy is not None and gt is not None:
                moved = accuracy_row(outputs, *gt)
                metrics["accuracy"] = {f"{k}_pp": abs(float(moved[k]) - float(ref_accuracy[k])) * 100.0
                                       for k in ("thres2mm", "thres4mm")}
            rows.append({"item": item.id, "leg": leg_id, "machine": machine, "pair": pair, "precision": precision,
                         "metrics": metrics})

        assert self._runners is not None
        runners = self._runners
        views_count = int(feed["imgs"].shape[1])

        def run(leg: Leg, f: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
            out = runners.infer(leg, f)
            if large:  # one session at a time: ONNX Runtime CUDA's arenas of a few sessions at DTU's
                runners.release_runners()  # size ran an H200 out of memory (2026-12-03)
            return out

        for candidate in self.candidates:
            spec = registry.get(candidate)
            if spec.consumes != "onnx":
                continue
            machine = self.chain.machine_class(candidate)
            per_variant: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
            for workaround in RIG_WORKAROUNDS:
                for variant in ("raw", "simplified"):
                    leg = Leg(candidate, variant, workaround, RIG_EXPORTER, "rigs")
                    out = run(leg, feed)
                    per_variant[(workaround, variant)] = out
                    add(f"torch-vs-{family(candidate)}", spec.precision, machine, leg.id, out)
            if self.with_extra_graphs and spec.precision == "fp32" and spec.device == "cpu":  # ONNX Runtime's own graphs (custom_op) run here
                for workaround, exporter, variant in RIG_EXTRA_FP32:
                    leg = Leg(candidate, variant, workaround, exporter, "rigs")
                    add(f"torch-vs-{family(candidate)}", spec.precision, machine, leg.id, run(leg, feed))
            # the same runtime against itself: raw vs simplified (what the property suite gates as ort-vs-ort)
            add(f"{family(candidate)}-vs-{family(candidate)}", spec.precision, machine, f"{candidate}-raw-vs-simplified",
                per_variant[("precomputed", "simplified")], per_variant[("precomputed", "raw")], accuracy=False)
            if spec.precision == "fp32":
                leg = Leg(candidate, "simplified", "precomputed", RIG_EXPORTER, "rigs")

                def infer(f: dict[str, torch.Tensor], _leg: Leg = leg) -> dict[str, torch.Tensor]:
                    return run(_leg, f)

                rows += self._relations(item, views, feed, infer,
                                        per_variant[("precomputed", "simplified")], f"{family(candidate)}-vs-{family(candidate)}",
                                        machine, candidate)
        # torch against itself: the precomputed inverse, permuted sources, the world scaled
        with_inverse = self.chain.torch_runner("fp32", with_inverse=True)
        add("torch-vs-torch", "fp32", self.machine, "torch-fp32-precomputed-inverse", with_inverse.infer(feed))
        rows += self._relations(item, views, feed, lambda f: torch_runner.infer(
            {k: v for k, v in f.items() if k != "inverse_proj_matrices"}), reference, "torch-vs-torch", self.machine,
            "torch-fp32")
        # candidates that consume the model compile an artifact per shape: at the named cases only;
        # torch's own reduced-precision modes (the benchmark's, not candidates) run eagerly on every input
        for name in self.model_backends:
            spec = registry.get(name)
            if name in self.skipped:
                continue
            if spec.candidate and not item.case:
                continue
            call = self.chain.reference_feed(item.case) if item.case else reference_feed
            try:
                out = self.chain.model_runner(name).infer(call)
            except BackendUnavailable as exc:  # found only when it runs (e.g. a package its loader cannot load)
                self.skipped[name] = exc.missing
                continue
            add(f"torch-vs-{family(name)}", spec.precision, self.chain.machine_class(name), name, out)
        if item.case in self.static_cases:
            self._static_legs(item, add)
        if self.with_golden and "ort-cpu" in self.candidates:
            rows += self._golden(item, feed, views_count)
        if with_stages:
            rows += self._stages(item, feed, ref_stages, views_count)
        return rows

    def _relations(self, item: Item, views: Views, feed: dict[str, torch.Tensor],
                   infer: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]],
                   base: dict[str, torch.Tensor], pair: str, machine: str, who: str) -> list[dict[str, Any]]:
        """The metamorphic relations the property suite gates with ``pair``'s fp32 table."""
        depth_values = feed["depth_values"]
        scaled_feed = item_feed(item, scale_rig(views, item.scale))
        scaled = infer(scaled_feed)
        unscaled = {"depth": scaled["depth"] / item.scale, "photometric_confidence": scaled["photometric_confidence"]}
        relations = [("world-scaled", unscaled)]
        n = int(feed["imgs"].shape[1])
        if n >= 3:
            order = [*range(2, n), 1]  # sources rotated by one
            relations.append(("sources-permuted", infer(item_feed(item, permute_sources(views, order)))))
        return [{"item": item.id, "leg": f"{who}-{name}", "machine": machine, "pair": pair, "precision": "fp32",
                 "metrics": recorded(compare(base, outputs, None, depth_values=depth_values))}
                for name, outputs in relations]

    def _static_legs(self, item: Item, add: Callable[..., None]) -> None:
        """The gate's own static graphs of a named case, every workaround, exporter and variant."""
        assert item.case is not None
        onnx_candidates = tuple(c for c in self.candidates if registry.get(c).consumes == "onnx")
        for leg in plan_legs((item.case,), EXPORTABLE, EXPORTERS, ("raw", "simplified"), onnx_candidates):
            out = self.chain.candidate_runner(leg).infer(self.chain.workaround_feed(item.case, leg.workaround))
            add(f"torch-vs-{family(leg.candidate)}", leg.precision, self.chain.machine_class(leg.candidate), leg.id, out)
            self.chain.release(leg)

    def _graph(self, views: int, precision: str, probes: bool) -> Path:
        key = (views, precision, probes)
        if key not in self._probe_graphs:
            assert self._runners is not None
            if not probes:
                self._probe_graphs[key] = self._runners.onnx(views, "precomputed", RIG_EXPORTER, "simplified", precision).path
            else:
                config = ExportConfig(exporter=RIG_EXPORTER, opset=self.chain.config.opset,  # type: ignore[arg-type]
                                      workaround="precomputed", dynamic=True, probes=True)  # type: ignore[arg-type]
                raw = OnnxFromTorch(self.chain.model, self.chain.weights_digest, self._runners.export_feed(views), config,
                                    get_workaround("precomputed"), self.chain.cache)()
                if precision == "fp16":  # derived from the FP32 probe export, as the chain does
                    raw = MixedOnnxFromOnnx(raw, self.chain.cache)()
                self._probe_graphs[key] = SimplifiedOnnxFromOnnx(raw, self.chain.cache)().path
        return self._probe_graphs[key]

    def _golden(self, item: Item, feed: dict[str, torch.Tensor], views: int) -> list[dict[str, Any]]:
        """ONNX Runtime CPU with one intra-op thread against its default session, same graph."""
        rows = []
        workaround_feed = get_workaround("precomputed").prepare_feed(feed)
        for precision in ("fp32", "fp16"):
            name = "ort-cpu" if precision == "fp32" else "ort-cpu-fp16"
            if name not in self.candidates:
                continue
            path = self._graph(views, precision, probes=False)
            outputs = []
            for threads in (None, 1):
                runner = registry.make_runner(name, path, label=f"golden-{threads}", threads=threads).prepare()
                try:
                    outputs.append(runner.infer(workaround_feed))
                finally:
                    runner.close()
            rows.append({"item": item.id, "leg": f"{name}-threads-1-vs-default", "machine": "cpu", "pair": "golden-vs-ort",
                         "precision": precision,
                         "metrics": recorded(compare(outputs[0], outputs[1], None, depth_values=feed["depth_values"]))})
        return rows

    def _stages(self, item: Item, feed: dict[str, torch.Tensor], ref_stages: dict[str, torch.Tensor],
                views: int) -> list[dict[str, Any]]:
        rows = []
        workaround_feed = get_workaround("precomputed").prepare_feed(feed)
        for candidate in self.candidates:
            spec = registry.get(candidate)
            if spec.consumes != "onnx" or spec.name.endswith("-default"):
                continue
            path = self._graph(views, spec.graph or "fp32", probes=True)
            backend = f"ort-{spec.device}"  # the strict FP32 session runs either precision's probe build
            runner = registry.make_runner(backend, path, label="probes", validate_values=False).prepare()
            try:
                values = runner.run_all({k: v.cpu() for k, v in workaround_feed.items()})  # type: ignore[attr-defined]
            finally:
                runner.close()
            stages = {name.removeprefix("probe_"): value.float() for name, value in values.items()}
            rows.append({"item": item.id, "leg": f"{candidate}-probes", "machine": self.chain.machine_class(candidate),
                         "pair": "stages", "candidate": candidate, "precision": spec.precision,
                         "stages": stage_worst(ref_stages, stages, feed["depth_values"])})
        return rows

    # -- the corpus ------------------------------------------------------------------------------
    def run(self, items: Sequence[Item], progress: Callable[[int, int, Item, float], None] | None = None) -> Iterator[Item]:
        """Measure every input not yet done; yields each input as it finishes."""
        finished = self.done()
        todo = [i for i in items if i.id not in finished]
        started = time.perf_counter()
        for index, item in enumerate(todo):
            if progress is not None:
                progress(len(items) - len(todo) + index, len(items), item, time.perf_counter() - started)
            rows = self.measure(item)
            self._write(rows, item)
            yield item
        if progress is not None and todo:
            progress(len(items), len(items), todo[-1], time.perf_counter() - started)

    def close(self) -> None:
        if self._runners is not None:
            self._runners.close()


def record(samples: list[dict[str, Any]], items: Sequence[Item], machine: str, family_name: str,
           info: dict[str, Any]) -> dict[str, Any]:
    """The calibration record: provenance, the corpus and every sample."""
    return {"schema": SCHEMA, "kind": "calibration-record", "machine_class": machine, "family": family_name,
            "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **info,
            "corpus": [asdict(i) for i in items], "samples": samples}


__all__ = ["Item", "Calibrator", "corpus", "draw_item", "rig_item", "record", "recorded", "stage_worst", "FAMILIES", "CALIBRATING",
           "DEFAULT_SEEDS", "SCHEMA"]
