"""Hand a parity leg to the tools NVIDIA's users debug with: Polygraphy and trtexec files and commands.

``save_replay`` writes, into a fresh folder::

    inputs.json              the graph's inputs, Polygraphy's ``--load-inputs`` format
    reference_outputs.json   the reference outputs, Polygraphy's ``--load-outputs`` format
    inputs/<name>.bin        each input as raw bytes, for trtexec ``--loadInputs=name:file,...``
    reference/<name>.bin     each reference output as raw bytes, for trtexec ``--loadRefOutputs``
    model.onnx               a copy of the graph, with ``copy_onnx=True`` (a self-contained replay)
    commands.sh              the ready commands (``bash commands.sh [step ...]``), the gates'
                             translation and the gates no tool can express, as comments

Signature (``python -m harness check --save-polygraphy DIR`` calls this too)::

    save_replay(folder, *, onnx_path, inputs, reference, gates, depth_step=None, engine_path=None,
                subject="", reference_runner="torch-fp32", trtexec_build=None,
                polygraphy_trt_flags=("--strongly-typed",), on_exists="refuse", copy_onnx=False) -> Replay

* ``inputs`` / ``reference``: ``{tensor name: torch.Tensor}`` keyed by the GRAPH's own names (its
  ``graph.input`` / ``graph.output`` names; checked against the ONNX file, a mismatch raises
  ``InvalidArgument``). A caller whose names differ maps them first, e.g.
  ``{graph_name: feed[harness_name] for harness_name, graph_name in names.items()}``. Tensors may sit
  on any device; they are written in their own dtype, C order.
* ``gates``: ``{output name: {metric: limit}}``, the harness's tolerance table for the leg
  (``Tolerances.lookup``); outputs without gates are not compared by the commands.
* ``depth_step``: the depth-hypothesis interval in the depth output's units (mm), needed when a
  gate is in steps (``*_intervals``); ``depth_step_of(depth_values)`` computes it as compare.py does.
* ``engine_path``: where the trtexec command saves / loads the engine (default ``engine.plan`` in
  the folder); ``trtexec_build``: the harness's own trtexec build command for that engine (e.g.
  ``harness.convert.trtexec.trtexec_command``), written as is; without it a plain one is written.
* ``on_exists``: ``"refuse"`` raises ``OutputExists`` when ``folder`` exists; ``"suffix"`` writes
  ``folder-2``, ``folder-3``, ... instead. The folder is assembled under a hidden name and renamed
  into place, so a replay is complete or absent; an earlier one is never overwritten.
* ``copy_onnx``: copy the graph into the folder (the commands then default to the copy; an ONNX
  file with external data is not copied with it). Every command also takes ``ONNX=... ENGINE=...``.

How the gates become Polygraphy's and trtexec's tolerances: harness.report.replay_gates.

Formats and flags, where they come from:

* ``inputs.json``: a ``List[Dict[str, np.ndarray]]`` (one feed dict per iteration; one here) encoded
  by ``polygraphy.json.to_json`` (what ``save_json`` writes): Polygraphy's docs "Using Custom Input
  Data" (examples/cli/README.md: "a JSON file containing a List[Dict[str, np.ndarray]] ... created by
  using Polygraphy's JSON utilities, like save_json"), read by ``--load-inputs``
  (polygraphy/tools/args/comparator/data_loader.py).
* ``reference_outputs.json``: a ``polygraphy.comparator.RunResults`` (a list of ``(runner name,
  [IterationResult])`` pairs, ``IterationResult`` = outputs by name + runtime + runner name; struct.py),
  saved through its JSON encoder. ``--load-outputs`` appends it to the live runner's results and
  compares each runner with the next (``Comparator.default_comparisons``), so the live runner is
  compared with this reference; outputs are matched by name (``default_find_output_func``) and
  ``rtol`` is relative to the second (reference) output (``--rtol`` help text).
* ``--atol/--rtol/--check-error-stat/--error-quantile``: ``[<out_name>:]<value>`` per output,
  polygraphy/tools/args/comparator/compare.py (0.53.6, and the 0.49 docs' ``CompareFuncSimpleArgs``).
  ``--trt-outputs mark all --onnx-outputs mark all``: Polygraphy's how-to/debug_accuracy.md (0.53
  also spells it ``'*'``, and warns that ``mark all`` goes away in 0.55).
* trtexec ``--loadInputs=spec`` with ``spec ::= name":"file[","spec]`` (samples/common/
  sampleOptions.cpp help text); the files are raw tensor bytes with no header, C order, the engine
  I/O dtype (NVIDIA/TensorRT samples/trtexec/README.md §7.5 examples, ``np.ndarray.tofile`` in
  the TensorRT cookbook); ``--loadRefOutputs`` takes "the same name:file form as --loadInputs".
  ``--accuracyAlgorithm=l0|l1|l2|lInf|cos``, ``--atol/--rtol`` (l0 only), ``--accuracyThreshold``
  (mandatory and positive once ``--loadRefOutputs`` is given) and ``--refPair`` (only for two or more
  pairs, so not used here): trtexec README §7.5 (TensorRT 11.1) and the cookbook's measured notes.
"""

from __future__ import annotations

import os
import shlex
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import torch

from harness.errors import BackendUnavailable, InvalidArgument, OutputExists
from harness.fileio import atomic_write_bytes, atomic_write_text
from harness.report.replay_gates import Check, Inexpressible, depth_step_of, reference_fractions, translate_gates


@dataclass(frozen=True)
class Replay:
    """Paths written by ``save_replay`` (all inside ``folder``)."""

    folder: Path
    inputs_json: Path
    reference_json: Path
    commands: Path
    input_bins: Mapping[str, Path]
    reference_bins: Mapping[str, Path]
    checks: tuple[Check, ...]
    inexpressible: tuple[Inexpressible, ...]


def _num(value: float) -> str:
    return repr(float(value))


def _polygraphy_tolerance(checks: Sequence[Check]) -> list[str]:
    args = ["--check-error-stat", *[f"{c.output}:{c.stat}" for c in checks]]
    quantiles = [f"{c.output}:{_num(c.quantile)}" for c in checks if c.quantile is not None]
    if quantiles:
        args += ["--error-quantile", *quantiles]
    return args + ["--atol", *[f"{c.output}:{_num(c.atol)}" for c in checks], "--rtol", "0"]


def polygraphy_command(runner: str, checks: Sequence[Check], all_outputs: Sequence[str],
                       extra: Sequence[str] = ()) -> list[str]:
    """``polygraphy run "$ONNX" --onnxrt|--trt ...`` against the saved reference (argv, ``$ONNX``
    left for the shell)."""
    flag = {"onnxrt": "--onnxrt", "trt": "--trt"}[runner]
    args = ["polygraphy", "run", "$ONNX", flag, *extra, "--load-inputs", "inputs.json",
            "--load-outputs", "reference_outputs.json"]
    gated = [c.output for c in checks]
    if set(gated) != set(all_outputs):  # compare only the gated outputs: Polygraphy iterates the live ones
        args += ["--onnx-outputs" if runner == "onnxrt" else "--trt-outputs", *gated]
    return args + _polygraphy_tolerance(checks)


def trtexec_check_commands(checks: Mapping[str, Sequence[Check]], input_names: Sequence[str]
                           ) -> tuple[list[list[str]], list[str]]:
    """trtexec 11.1 accuracy checks of the saved engine against the raw reference, one per gate (each
    loads only its output's reference), and notes on the gates trtexec cannot take."""
    load_inputs = "--loadInputs=" + ",".join(f"{n}:inputs/{n}.bin" for n in input_names)
    commands, notes = [], []
    for output, rows in checks.items():
        for check in rows:
            if check.stat == "max":
                metric = ["--accuracyAlgorithm=lInf", f"--accuracyThreshold={_num(check.atol)}"]
            elif check.stat == "mean":
                metric = ["--accuracyAlgorithm=l1", f"--accuracyThreshold={_num(check.atol)}"]
            else:
                share = round(1.0 - float(check.quantile or 0.0), 12)
                metric = ["--accuracyAlgorithm=l0", f"--atol={_num(check.atol)}", "--rtol=0",
                          f"--accuracyThreshold={_num(share)}"]
            if float(metric[-1].split("=", 1)[1]) <= 0:  # trtexec requires a positive --accuracyThreshold
                notes.append(f"{output}: {check.stat} |err| <= {check.atol:g} (a zero threshold; Polygraphy checks it)")
                continue
            commands.append(["trtexec", "--loadEngine=$ENGINE", load_inputs,
                             f"--loadRefOutputs={output}:reference/{output}.bin", *metric])
    return commands, notes


def _shell(argv: Sequence[str]) -> str:
    """Quote for bash, leaving ``$ONNX`` / ``$ENGINE`` to expand (inside double quotes)."""
    out = []
    for arg in argv:
        if "$ONNX" in arg or "$ENGINE" in arg:
            out.append('"' + arg.replace('"', '\\"') + '"')
        else:
            out.append(shlex.quote(arg))
    return " ".join(out)


def _graph_names(onnx_path: Path) -> tuple[list[str], list[str]]:
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    initializers = {t.name for t in model.graph.initializer}
    return ([i.name for i in model.graph.input if i.name not in initializers], [o.name for o in model.graph.output])


def _check_names(what: str, given: Sequence[str], graph: Sequence[str], onnx_path: Path) -> None:
    unknown = [n for n in given if n not in graph]
    missing = [n for n in graph if n not in given] if what == "inputs" else []
    if unknown or missing:
        raise InvalidArgument(f"replay {what}", "not named as the graph names its tensors",
                              observed=f"unknown {unknown}, missing {missing}", expected=f"{list(graph)} (from {onnx_path.name})",
                              fix="map the harness's names to the graph's before calling save_replay")


def _publish(staging: Path, folder: Path, on_exists: str) -> Path:
    """Move the finished ``staging`` folder to ``folder`` (or, with ``suffix``, the first free
    ``folder-N``): ``mkdir`` claims the name atomically (concurrent xdist workers cannot share it),
    then ``rename`` replaces the empty claimed folder with the complete replay."""
    names = [folder] if on_exists == "refuse" else [folder, *(folder.with_name(f"{folder.name}-{n}")
                                                           for n in range(2, 1000))]
    for candidate in names:
        try:
            candidate.mkdir()
        except FileExistsError:
            continue
        os.rename(staging, candidate)
        return candidate
    if on_exists == "refuse":
        raise OutputExists(str(folder), "a replay (or something else) is already there", observed="the folder exists",
                           expected="a folder that does not exist yet", fix="pass a new folder; earlier replays are never overwritten")
    raise OutputExists(str(folder), "no free replay folder name", observed=f"{folder.name}-2 .. -999 exist", expected="fewer replays")


def _polygraphy_json():  # type: ignore[no-untyped-def]
    try:
        from polygraphy.comparator import RunResults
        from polygraphy.json import to_json
    except ImportError as exc:
        raise BackendUnavailable("polygraphy", f"polygraphy not importable ({exc})",
                                 fix="pip install 'mvsnet-trt-harness[polygraphy]' (or pip install polygraphy)") from None
    return RunResults, to_json


def save_replay(
    folder: str | Path,
    *,
    onnx_path: str | Path,
    inputs: Mapping[str, torch.Tensor],
    reference: Mapping[str, torch.Tensor],
    gates: Mapping[str, Mapping[str, float]],
    depth_step: float | None = None,
    engine_path: str | Path | None = None,
    subject: str = "",
    reference_runner: str = "torch-fp32",
    trtexec_build: str | None = None,
    polygraphy_trt_flags: Sequence[str] = ("--strongly-typed",),
    on_exists: str = "refuse",
    copy_onnx: bool = False,
    fractions: Mapping[str, float] | None = None,
) -> Replay:
    """Write the replay of one leg (see the module docstring for every argument and file);
    ``fractions``: the reference's shares of confident / stable pixels (``reference_fractions``,
    computed here from ``reference`` and ``inputs`` named as the model names them when omitted)."""
    onnx_path = Path(onnx_path).resolve()
    if not onnx_path.is_file():
        raise InvalidArgument("onnx_path", "no such ONNX file", observed=str(onnx_path), expected="the graph the leg ran")
    graph_inputs, graph_outputs = _graph_names(onnx_path)
    _check_names("inputs", list(inputs), graph_inputs, onnx_path)
    _check_names("reference outputs", list(reference), graph_outputs, onnx_path)
    _check_names("gates", list(gates), list(reference), onnx_path)
    from harness.default_model import resolve

    if fractions is None:
        fractions = reference_fractions(reference, inputs.get("depth_values"), resolve(None).kinds())
    checks, left = translate_gates(gates, depth_step, fractions)
    RunResults, to_json = _polygraphy_json()
    if on_exists not in ("refuse", "suffix"):
        raise InvalidArgument("on_exists", "unknown policy", observed=on_exists, expected="refuse or suffix")
    folder = Path(folder)
    if on_exists == "refuse" and folder.exists():  # before any work; _publish checks again atomically
        raise OutputExists(str(folder), "a replay (or something else) is already there", observed="the folder exists",
                           expected="a folder that does not exist yet", fix="pass a new folder; earlier replays are never overwritten")

    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".part", dir=folder.parent))
    try:
        arrays = {n: t.detach().cpu().contiguous().numpy() for n, t in inputs.items()}
        refs = {n: t.detach().cpu().contiguous().numpy() for n, t in reference.items()}
        atomic_write_text(staging / "inputs.json", to_json([arrays]))
        results = RunResults()
        results.add([refs], runtime=0.0, runner_name=reference_runner)
        atomic_write_text(staging / "reference_outputs.json", to_json(results))
        for sub, tensors in (("inputs", arrays), ("reference", refs)):
            for name, array in tensors.items():
                atomic_write_bytes(staging / sub / f"{name}.bin", array.astype(array.dtype.newbyteorder("<")).tobytes())
        engine = Path(engine_path).resolve() if engine_path is not None else None
        if copy_onnx:  # a self-contained replay (to hand on); the commands default to the copy
            shutil.copyfile(onnx_path, staging / "model.onnx")
        script = _commands_sh(subject, onnx_path, "model.onnx" if copy_onnx else str(onnx_path), engine, arrays, graph_outputs, checks, left, reference_runner,
                              trtexec_build, polygraphy_trt_flags)
        atomic_write_text(staging / "commands.sh", script)
        os.chmod(staging / "commands.sh", 0o755)
        os.chmod(staging, 0o755)
        target = _publish(staging, folder, on_exists)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return Replay(
        folder=target, inputs_json=target / "inputs.json", reference_json=target / "reference_outputs.json",
        commands=target / "commands.sh",
        input_bins={n: target / "inputs" / f"{n}.bin" for n in arrays},
        reference_bins={n: target / "reference" / f"{n}.bin" for n in refs},
        checks=tuple(c for rows in checks.values() for c in rows), inexpressible=tuple(left),
    )


def _commands_sh(subject: str, onnx_path: Path, onnx_default: str, engine: Path | None, arrays: Mapping[str, object],
                 outputs: Sequence[str], checks: Mapping[str, list[Check]], left: Sequence[Inexpressible],
                 reference_runner: str, trtexec_build: str | None, trt_flags: Sequence[str]) -> str:
    rounds = max((len(rows) for rows in checks.values()), default=0)
    lines = [
        "#!/usr/bin/env bash",
        f"# Replay of parity leg {subject or '(unnamed)'}, written by mvsnet-trt-harness "
        f"{datetime.now(timezone.utc).isoformat(timespec='seconds')}.",
        f"# inputs.json / reference_outputs.json: Polygraphy --load-inputs / --load-outputs (runner "
        f"{reference_runner!r});",
        "# inputs/*.bin, reference/*.bin: raw little-endian C-order tensors for trtexec --loadInputs / --loadRefOutputs.",
        "# Usage: bash commands.sh [step ...]   steps: " + " ".join(_step_names(rounds)) + " (default: all);",
        "# exit status 0 when every step ran passed. Override ONNX=..., ENGINE=..., POLYGRAPHY=..., TRTEXEC=....",
        "#",
        "# The harness's gates as tolerances (absolute, in each output's units; --rtol 0 so atol alone decides):",
    ]
    for output, rows in checks.items():
        for c in rows:
            q = f" {c.quantile:g}" if c.quantile is not None else ""
            note = " (approximate)" if c.approximate else ""
            lines.append(f"#   {output}: {c.stat}{q} |err| <= {c.atol:.6g}   from {c.source}{note}")
    lines.append("# Gates no tool here can express (checked by the harness only):" if left else
                 "# Every gate of the harness is expressed above.")
    lines += [f"#   {g.output}: {g.metric} {'>=' if g.metric == 'agreement' else '<='} {g.limit:g} -- {g.reason}"
              for g in left]
    lines += [f"#   {o}: no gate the tools can check; left out of the Polygraphy commands" for o in outputs
              if o not in checks]
    lines += ["", 'cd "$(dirname "$0")"', f'ONNX="${{ONNX:-{onnx_default}}}"',
              f'ENGINE="${{ENGINE:-{engine if engine is not None else "engine.plan"}}}"',
              'POLYGRAPHY="${POLYGRAPHY:-polygraphy}"', 'TRTEXEC="${TRTEXEC:-trtexec}"', ""]

    def body(argv: list[str]) -> str:
        text = _shell(argv)
        return text.replace("polygraphy run", "$POLYGRAPHY run", 1).replace("trtexec ", "$TRTEXEC ", 1) \
            if argv[0] in ("polygraphy", "trtexec") else text

    for r in range(rounds):
        part = [rows[r] for rows in checks.values() if len(rows) > r]
        suffix = "" if r == 0 else f"_{r + 1}"
        lines += [f"# ONNX Runtime (Polygraphy's runner) against the reference{' (second statistic)' if r else ''}",
                  f"onnxrt{suffix}() {{ {body(polygraphy_command('onnxrt', part, outputs))}; }}",
                  "# TensorRT (engine built by Polygraphy from the same ONNX) against the reference",
                  f"trt{suffix}() {{ {body(polygraphy_command('trt', part, outputs, trt_flags))}; }}"]
    layerwise = ["polygraphy", "run", "$ONNX", "--trt", *trt_flags, "--onnxrt", "--trt-outputs", "mark", "all",
                 "--onnx-outputs", "mark", "all", "--load-inputs", "inputs.json", "--fail-fast"]
    lines += ["# Layerwise: every tensor of TensorRT against ONNX Runtime; the first mismatch is where they part",
              "# (Polygraphy's default tolerances; 0.53 also spells 'mark all' as '*'). Marking outputs can change",
              "# TensorRT's fusions: use `polygraphy debug reduce` / `surgeon extract` to confirm.",
              f"layerwise() {{ {body(layerwise)}; }}"]
    shapes = ",".join(f"{n}:{'x'.join(str(d) for d in getattr(a, 'shape', ()))}" for n, a in arrays.items())
    build = trtexec_build or _shell(["trtexec", "--onnx=$ONNX", "--saveEngine=$ENGINE", f"--shapes={shapes}"])
    build = build.replace("trtexec ", "$TRTEXEC ", 1) if build.startswith("trtexec ") else build
    for flag, var in ((f"--onnx={shlex.quote(str(onnx_path))}", '"--onnx=$ONNX"'),
                      ("--saveEngine=engine.plan", '"--saveEngine=$ENGINE"')):
        build = build.replace(flag, var)  # the harness's command names the same files: let the overrides apply
    lines += ["# trtexec: build the engine (the harness's build settings when it gave them)",
              f"trtexec_build() {{ {build}; }}",
              "# trtexec (TensorRT >= 11.1): the engine against the raw reference, one command per gate, each loading",
              "# its output's reference only (written from trtexec's documentation; not run here, no TensorRT)"]
    checks_tx, skipped = trtexec_check_commands(checks, list(arrays))
    lines += [f"# not given to trtexec: {note}" for note in skipped]
    lines.append("trtexec_check() {")
    if checks_tx:
        lines.append("  local status=0")
        lines += [f"  {body(c)} || status=1" for c in checks_tx]
        lines.append("  return $status")
    else:
        lines.append("  echo 'no gate trtexec can check'")
    lines += ["}", "",
              f'[ "$#" -gt 0 ] || set -- {" ".join(_step_names(rounds))}',
              "status=0",
              'for step in "$@"; do echo "== $step"; "$step" || status=1; done',
              "exit $status", ""]
    return "\n".join(lines)


def _step_names(rounds: int) -> list[str]:
    names = []
    for r in range(rounds):
        suffix = "" if r == 0 else f"_{r + 1}"
        names += [f"onnxrt{suffix}", f"trt{suffix}"]
    return names + ["layerwise", "trtexec_build", "trtexec_check"]


__all__ = ["Check", "Inexpressible", "Replay", "depth_step_of", "reference_fractions", "save_replay", "translate_gates",
           "polygraphy_command", "trtexec_check_commands"]
