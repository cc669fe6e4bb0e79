"""The pytest plugin: every option (declared in harness.options, shared with ``python -m harness``),
marker and session fixture of the harness, in one place.

Loaded by the project's ``conftest.py`` (``pytest_plugins = ["harness.plugin"]``).
"""

from __future__ import annotations

import json
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

# Hypothesis reads --hypothesis-profile at configure time: register the harness's profiles first
import harness.properties  # noqa: F401  (registers Hypothesis profiles before --hypothesis-profile is read)
from harness.chain import OPTION_NAMES, Chain, ChainConfig, Leg, LegResult, plan_legs, run_leg
from harness.convert.onnx_export import EXPORTERS
from harness.convert.workarounds import EXPORTERS_FOR, get_workaround
from harness.data.cases import get_case
from harness.errors import BackendUnavailable, HarnessError
from harness.gates.limits import Tolerances
from harness.gpus import (
    ROW_FIELD,
    check_worker_count,
    cpu_share,
    merge_by_gpu,
    parse_gpus,
    physical_gpu,
    pin_worker,
    spread,
)
from harness.hostmem import PYTEST_TRIM_THRESHOLD, keep_freed_blocks
from harness.options import PYTEST, add_pytest_options, option, parsed_values

PROJECT_ROOT = Path(__file__).resolve().parents[1]
PROFILES: dict[str, dict[str, Any]] = {
    "quick": {"cases": ("small",)},
    "full": {"cases": ("small", "seed")},
}
#: What the pytest options may name: the chain's lists and the profiles.
NAMES = {**OPTION_NAMES, "profile": tuple(sorted(PROFILES))}
MARKERS = {
    "gpu": "needs a CUDA device (skipped with the reason when none is present)",
    "trt": "needs TensorRT (skipped with the reason when it is not importable or cannot run here)",
    "slow": "takes more than a few seconds on a CPU",
    "benchmark": "a timing benchmark (pytest-benchmark); never run under xdist",
}
RESULTS_KEY = pytest.StashKey["SessionResults"]()
CHAIN_KEY = pytest.StashKey[Chain]()
GPUS_KEY = pytest.StashKey[tuple[int, ...]]()
OPTIONS_KEY = pytest.StashKey["HarnessOptions"]()


@dataclass(frozen=True)
class HarnessOptions:
    profile: str
    cases: tuple[str, ...]
    exporters: tuple[str, ...]
    workarounds: tuple[str, ...]
    variants: tuple[str, ...]
    candidates: tuple[str, ...]
    chain: ChainConfig
    tolerances: Path | None
    report_dir: Path | None  # None: no report
    localize: bool = False
    golden: Path | None = None  # stored ONNX Runtime outputs per graph variant (--harness-golden)
    save_polygraphy: Path | None = None  # every leg's replay under DIR/<leg id>/ (--harness-save-polygraphy)
    user: UserArtifacts = field(default_factory=lambda: UserArtifacts())


@dataclass(frozen=True)
class UserArtifacts:
    """The user's own conversion to gate (``--harness-onnx/-engine/-model/-io-map``)."""

    onnx: tuple[Path, ...] = ()
    engine: tuple[Path, ...] = ()
    model: str | None = None
    io_map: str | None = None


@dataclass
class SessionResults:
    parity: list[dict[str, Any]] = field(default_factory=list)
    engines: list[dict[str, Any]] = field(default_factory=list)
    timing: list[dict[str, Any]] = field(default_factory=list)
    localisation: list[str] = field(default_factory=list)
    attribution: list[dict[str, Any]] = field(default_factory=list)
    accuracy: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    user_artifacts: list[dict[str, Any]] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # backend -> the missing piece
    failures: list[str] = field(default_factory=list)  # failed tests that are not parity legs


def _csv(value: str | None) -> tuple[str, ...]:
    return tuple(v.strip() for v in value.split(",") if v.strip()) if value else ()


def pytest_addoption(parser: pytest.Parser) -> None:
    """Every option from the one table both fronts share (harness.options)."""
    add_pytest_options(parser.getgroup("harness", "MVSNet torch -> ONNX -> TensorRT parity harness"), NAMES)


def _validated(config: pytest.Config, name: str, given: tuple[str, ...]) -> tuple[str, ...]:
    """``given``, the values of the comma-list option ``name``, each one of the names its row allows."""
    flag, allowed = option(name, PYTEST).flag(PYTEST), option(name, PYTEST).allowed(NAMES)
    if not given:
        raise pytest.UsageError(f"{flag}: empty list. Expected: one or more of {', '.join(allowed)}.")
    bad = [v for v in given if v not in allowed]
    if bad:
        raise pytest.UsageError(f"{flag}: unknown value(s) {', '.join(bad)}. Expected: any of {', '.join(allowed)}.")
    return given


def _options(config: pytest.Config) -> HarnessOptions:
    opt = config.getoption
    parsed = parsed_values(PYTEST, opt)
    profile = opt("--harness-profile")
    cases = _csv(opt("--harness-cases")) or PROFILES[profile]["cases"]
    if opt("--harness-no-report") and opt("--harness-report-dir") != option("report-dir").default_for(PYTEST):
        raise pytest.UsageError("--harness-no-report contradicts --harness-report-dir: pass one of them.")
    if opt("--harness-model") and opt("--harness-align-corners") is not None:  # as check refuses it (exit 2)
        raise pytest.UsageError(
            f"--harness-align-corners {opt('--harness-align-corners')} contradicts --harness-model "
            f"{opt('--harness-model')}: with --harness-model the reference is your code, whose grid_sample decides "
            "the sampling convention (the flag sets the harness MVSNet's). Fix: leave out --harness-align-corners, "
            "or leave out --harness-model to gate against the harness's MVSNet in that convention; "
            "python -m harness check --model MODULE:CALLABLE says which convention your code computes.")
    built = HarnessOptions(
        profile=profile,
        cases=_validated(config, "cases", cases),
        exporters=_validated(config, "exporters", _csv(opt("--harness-exporters"))),
        workarounds=_validated(config, "workarounds", _csv(opt("--harness-workarounds"))),
        variants=_validated(config, "variants", _csv(opt("--harness-variants"))),
        candidates=_validated(config, "backends", _csv(opt("--harness-backends"))),
        chain=ChainConfig.from_options(parsed),
        tolerances=opt("--harness-tolerances"),
        report_dir=None if opt("--harness-no-report") else opt("--harness-report-dir"),
        localize=opt("--harness-localize"),
        golden=opt("--harness-golden"),
        save_polygraphy=opt("--harness-save-polygraphy"),
        user=UserArtifacts(tuple(opt("--harness-onnx") or ()), tuple(opt("--harness-engine") or ()),
                           opt("--harness-model"), opt("--harness-io-map")),
    )
    if not plan_legs(built.cases, built.workarounds, built.exporters, built.variants, built.candidates):
        raise pytest.UsageError(
            f"--harness-workarounds {','.join(built.workarounds)} with --harness-exporters {','.join(built.exporters)} "
            f"and --harness-backends {','.join(built.candidates)} leave no parity leg to run (custom_op exports with "
            "torchscript only and runs on ONNX Runtime only). Fix: add --harness-exporters torchscript or another "
            "workaround.")
    return built


def _configure_gpus(config: pytest.Config) -> None:
    """Pin each xdist worker to its GPU before anything initialises CUDA (see harness.gpus)."""
    workerinput = getattr(config, "workerinput", None)
    if workerinput is not None:
        if workerinput.get("harness_gpus"):
            pin_worker(workerinput["workerid"], tuple(workerinput["harness_gpus"]))
        return
    text = config.getoption("--harness-gpus")
    if not text:
        return
    if config.getoption("--harness-device") not in ("auto", "cuda", "cuda:0"):
        raise pytest.UsageError("--harness-gpus contradicts --harness-device: each worker sees its GPU as cuda:0; "
                                "pass one of them.")
    import torch

    try:
        gpus = parse_gpus(text, torch.cuda.device_count())  # counts through NVML: CUDA stays uninitialised
        dist = config.getoption("dist", default="no")
        check_worker_count(len(config.getoption("tx", default=None) or []) if dist != "no" else 1, gpus)
        if dist == "no":
            pin_worker("master", gpus)  # no xdist: this process is the one worker
    except HarnessError as exc:
        raise pytest.UsageError(str(exc)) from exc
    config.stash[GPUS_KEY] = gpus


def _share_cpus() -> None:
    """Under xdist each worker's torch takes its share of the cores (harness.gpus.cpu_share;
    ONNX Runtime's CPU sessions ask the same function), instead of N pools of every core that
    oversubscribe the host N times over."""
    threads = cpu_share()
    if threads:
        import torch

        torch.set_num_threads(threads)


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node) -> None:  # type: ignore[no-untyped-def]  # xdist hook
    gpus = node.config.stash.get(GPUS_KEY, ())
    if gpus:
        node.workerinput["harness_gpus"] = list(gpus)


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    _configure_gpus(config)  # first: before any fixture or plugin can initialise CUDA
    keep_freed_blocks(trim=PYTEST_TRIM_THRESHOLD)  # in each xdist worker too (harness.hostmem)
    try:
        _share_cpus()
    except HarnessError as exc:
        raise pytest.UsageError(str(exc)) from exc
    for name, text in MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {text}")
    config.stash[OPTIONS_KEY] = _options(config)
    config.stash[RESULTS_KEY] = SessionResults()
    config.pluginmanager.register(SessionReporter(config), "harness-session-reporter")


def options(config: pytest.Config) -> HarnessOptions:
    return config.stash[OPTIONS_KEY]


def pytest_sessionstart(session: pytest.Session) -> None:
    """Check once what every test would otherwise fail on one by one (weights, scene, device,
    writable cache and reports folders): one message and the fix, then the session stops (exit
    4). xdist workers skip it: the controller has checked. SIGTERM then ends the session like
    Ctrl-C, so the record of what finished is still written (marked incomplete)."""
    config = session.config
    if hasattr(config, "workerinput"):
        return
    from harness.preflight import PYTEST_FLAGS, preflight

    opts = options(config)
    try:
        config.stash[CHAIN_KEY] = preflight(opts.chain, opts.cases, opts.report_dir, PYTEST_FLAGS)
    except HarnessError as exc:
        raise pytest.UsageError(str(exc)) from None
    import signal
    import threading

    if threading.current_thread() is threading.main_thread():
        def terminate(signum: int, frame: object) -> None:
            raise KeyboardInterrupt(f"SIGTERM ({signum})")

        previous = signal.signal(signal.SIGTERM, terminate)

        def restore() -> None:
            signal.signal(signal.SIGTERM, previous)

        config.add_cleanup(restore)


def pytest_report_header(config: pytest.Config) -> str:
    from harness.report.machine import machine_info, one_line

    return one_line(machine_info(), options(config).profile)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrize the harness's axes from the options, with readable ids."""
    opts = options(metafunc.config)
    names = metafunc.fixturenames
    if "user_leg" in names:
        params = _user_legs(opts)
        metafunc.parametrize("user_leg", params, ids=[p.id if hasattr(p, "id") else str(p) for p in params])
        return
    if "parity_leg" in names:
        legs = plan_legs(opts.cases, opts.workarounds, opts.exporters, opts.variants, opts.candidates)
        metafunc.parametrize("parity_leg", legs, ids=[leg.id for leg in legs])
        return
    if "inverse_workaround" in names and "exporter" in names:
        pairs = [(w, e) for w in opts.workarounds for e in opts.exporters if e in EXPORTERS_FOR.get(w, EXPORTERS)]
        metafunc.parametrize(("inverse_workaround", "exporter"), pairs, indirect=True, scope="session",
                             ids=[f"{w}-{e}" for w, e in pairs])
    elif "inverse_workaround" in names:
        metafunc.parametrize("inverse_workaround", opts.workarounds, indirect=True, scope="session")
    elif "exporter" in names:
        metafunc.parametrize("exporter", opts.exporters, indirect=True, scope="session")
    if "case" in names:
        metafunc.parametrize("case", opts.cases, indirect=True, scope="session")


@dataclass(frozen=True)
class RefusedArtifact:
    """A user artifact refused while planning (unmappable, wrong shape ...): its test raises ``error``."""

    kind: str
    path: Path
    error: HarnessError

    @property
    def id(self) -> str:
        return f"user-{self.kind}-{self.path.stem}-refused"


NO_USER_ARTIFACT = "no user artifact to gate: pass --harness-onnx FILE and/or --harness-engine FILE"


def _user_legs(opts: HarnessOptions) -> list[Any]:
    from harness.check import plan_user_legs, prepare_engine, prepare_onnx

    user = opts.user
    if not user.onnx and not user.engine:
        return [pytest.param(None, id="no-user-artifact", marks=pytest.mark.skip(reason=NO_USER_ARTIFACT))]
    explicit = opts.cases if opts.cases != PROFILES[opts.profile]["cases"] else (None,)
    params: list[Any] = []
    for case in explicit:
        targets: list[Any] = []
        for kind, paths in (("onnx", user.onnx), ("engine", user.engine)):
            for path in paths:
                try:
                    onnx_target = next((t for t in targets if t.kind == "onnx"), None)
                    targets.append(prepare_onnx(path, user.io_map, case) if kind == "onnx"
                                   else prepare_engine(path, case, onnx_target))
                except HarnessError as exc:
                    params.append(RefusedArtifact(kind, path, exc))
        params += plan_user_legs(targets)
    return params


# -- session fixtures ------------------------------------------------------------------------

@pytest.fixture(scope="session")
def harness_options(pytestconfig: pytest.Config) -> HarnessOptions:
    return options(pytestconfig)


@pytest.fixture(scope="session")
def chain(pytestconfig: pytest.Config, harness_options: HarnessOptions):
    """The session's chain: model, data, ONNX artifacts and runners, each built once (the one the
    start-of-session checks loaded, when this process made them)."""
    built = pytestconfig.stash.get(CHAIN_KEY, None) or Chain(harness_options.chain)
    yield built
    built.close()


@pytest.fixture(scope="session")
def tolerances(harness_options: HarnessOptions) -> Tolerances:
    return Tolerances.load(harness_options.tolerances)


@pytest.fixture(scope="session")
def mvsnet(chain: Chain):
    """The torch model with the session's weights (eval mode, CPU)."""
    return chain.model


@pytest.fixture(scope="session")
def inverse_workaround(request: pytest.FixtureRequest):
    """The torch.inverse workaround under test (precomputed / closed_form), applied to the export."""
    return get_workaround(request.param)


@pytest.fixture(scope="session")
def exporter(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="session")
def case(request: pytest.FixtureRequest):
    return get_case(request.param)


@pytest.fixture(scope="session")
def onnx_model(chain: Chain, case, inverse_workaround, exporter):
    """The raw exported ONNX artifact for (case, workaround, exporter)."""
    return chain.onnx(case.name, inverse_workaround.name, exporter, "raw")


@pytest.fixture(scope="session")
def simplified_onnx_model(chain: Chain, case, inverse_workaround, exporter):
    return chain.onnx(case.name, inverse_workaround.name, exporter, "simplified")


@pytest.fixture
def harness_results(pytestconfig: pytest.Config) -> SessionResults:
    return pytestconfig.stash[RESULTS_KEY]


@pytest.fixture
def parity(chain: Chain, tolerances: Tolerances, harness_options: HarnessOptions, record_property):
    """``parity(leg)`` runs a leg, records its row for the report, and returns the result.

    A backend that cannot run here skips the test with the missing piece as reason. A failing
    leg (or every leg, with --harness-localize) gets a per-stage localisation table.
    """

    def run(leg: Leg):
        try:
            result = run_leg(chain, leg, tolerances)
        except BackendUnavailable as exc:
            record_property("harness_skipped", json.dumps({leg.candidate: exc.missing}))
            pytest.skip(f"{exc.backend}: {exc.missing}")
        if harness_options.localize or not result.passed:
            from dataclasses import replace

            from harness.localize import leg_stage_errors, localisation_table, stage_diffs

            try:
                rows = leg_stage_errors(chain, leg, tolerances)
                table = localisation_table(rows, f"stage errors of {leg.id} (relative max |error|):")
                if tolerances.stages_measured(leg.candidate, leg.precision, leg.case, chain.machine_class(leg.candidate)):  # measured gates count
                    result = replace(result, diffs={**result.diffs, **stage_diffs(rows)})
            except BackendUnavailable as exc:
                table = f"no stage probes for {leg.id}: {exc.missing}"
            result = replace(result, localisation=table)
            record_property("harness_localisation", table)
        if harness_options.golden is not None:
            from harness.chain import with_golden

            result = with_golden(chain, leg, tolerances, result, harness_options.golden)
        row = {**result.row(), ROW_FIELD: physical_gpu(),
               "gpu": _gpu_name(chain.device)}
        replays = harness_options.save_polygraphy
        if replays is None and not result.passed and harness_options.report_dir is not None:
            replays = harness_options.report_dir / "replays"
        if replays is not None:
            row.update(_save_replay(chain, leg, result, replays))
            if not result.passed and "replay" in row:
                from dataclasses import replace

                note = f"Polygraphy / trtexec replay: {row['replay']}"
                result = replace(result, localisation=f"{result.localisation}\n{note}" if result.localisation else note)
        record_property("harness_parity", json.dumps(row, default=float))
        return result

    return run


def _save_replay(chain: Chain, leg: Leg, result: LegResult, root: Path) -> dict[str, str]:
    """``{"replay": <commands.sh>}``, or ``{"replay_error": ...}`` when it could not be written (a
    replay must not turn a parity verdict into an error)."""
    from harness.chain import replay_leg

    try:
        return {"replay": str(replay_leg(chain, leg, result, root / leg.id).commands)}
    except HarnessError as exc:
        return {"replay_error": str(exc)}


@pytest.fixture
def user_parity(chain: Chain, tolerances: Tolerances, harness_options: HarnessOptions, record_property):
    """``user_parity(leg)`` runs one leg of the user's artifacts (``harness.check``), records its
    row (and the artifact's facts, also when it skips) for the report, and returns the result."""
    from harness.check import run_user_leg

    def run(leg: Any):
        if isinstance(leg, RefusedArtifact):
            raise leg.error
        record_property("harness_user_artifact", json.dumps(leg.target.artifact(), default=str))
        try:
            result = run_user_leg(chain, leg, tolerances, harness_options.user.model, harness_options.user.io_map)
        except BackendUnavailable as exc:
            record_property("harness_skipped", json.dumps({leg.backend: exc.missing}))
            pytest.skip(f"{exc.backend}: {exc.missing}")
        record_property("harness_parity", json.dumps(result.row(), default=float))
        return result

    return run


# -- session end: one record per run, one summary table ---------------------------------------

class SessionReporter:
    """Collects parity rows from test reports (also those coming back from xdist workers),
    writes the run record at the end of the session and prints the summary table."""

    SLOWEST = 10

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.results = config.stash[RESULTS_KEY]
        self.started = time.perf_counter()
        self.outcomes: Counter[str] = Counter()
        self.seconds: defaultdict[str, float] = defaultdict(float)

    def _count(self, report: pytest.TestReport) -> None:
        """Outcomes as pytest's own summary counts them (setup/teardown failures are errors)."""
        self.seconds[report.nodeid] += float(report.duration or 0.0)
        xfail = hasattr(report, "wasxfail")
        if report.when == "call":
            if report.skipped:
                self.outcomes["xfailed" if xfail else "skipped"] += 1
            else:
                self.outcomes["failed" if report.failed else "passed"] += 1
        elif report.failed:
            self.outcomes["errors"] += 1
        elif report.skipped and report.when == "setup":
            self.outcomes["xfailed" if xfail else "skipped"] += 1

    def session_block(self) -> dict[str, Any]:
        slowest = sorted(self.seconds.items(), key=lambda kv: kv[1], reverse=True)[:self.SLOWEST]
        block: dict[str, Any] = {k: int(self.outcomes.get(k, 0)) for k in ("passed", "failed", "skipped", "xfailed",
                                                                          "errors")}
        block["wall_s"] = round(time.perf_counter() - self.started, 2)
        block["slowest"] = [[nodeid, round(seconds, 3)] for nodeid, seconds in slowest]
        return block

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        self._count(report)
        keys = {key for key, _ in report.user_properties}
        if report.failed and "harness_parity" not in keys:  # a parity leg's failure is its row's
            self.results.failures.append(report.nodeid if report.when == "call" else f"{report.nodeid} ({report.when})")
        if report.when != "call":
            return
        for key, value in report.user_properties:
            if key == "harness_skipped":
                self.results.skipped.update(json.loads(str(value)))
            elif key == "harness_parity":
                self.results.parity.append(json.loads(str(value)))
            elif key == "harness_engine":
                self.results.engines.append(json.loads(str(value)))
            elif key == "harness_timing":
                self.results.timing.append(json.loads(str(value)))
            elif key == "harness_localisation":
                self.results.localisation.append(str(value))
            elif key == "harness_attribution":
                self.results.attribution.extend(json.loads(str(value)))
            elif key == "harness_accuracy":  # suites/test_accuracy.py: the reference's row and a backend's
                pair = json.loads(str(value))
                for row in (pair["reference"], pair["candidate"]):
                    if row not in self.results.accuracy:
                        self.results.accuracy.append(row)
            elif key == "harness_user_artifact" and json.loads(str(value)) not in self.results.user_artifacts:
                self.results.user_artifacts.append(json.loads(str(value)))

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        if hasattr(self.config, "workerinput"):  # xdist worker: the controller writes the record
            return
        opts = options(self.config)
        if opts.report_dir is None or not (self.results.parity or self.results.engines or self.results.timing
                                           or self.results.attribution or self.results.accuracy
                                           or self.results.user_artifacts):
            return
        _add_speedups(self.results.timing)
        gpus = self.config.stash.get(GPUS_KEY, ())
        if gpus:  # one worker per GPU: a row per GPU and how far the GPUs disagree
            for (case, backend), value in sorted(spread(self.results.timing).items()):
                self.results.notes.append(f"{case} {backend}: median spread {value:.1%} across GPUs {list(gpus)}")
        from harness.report.record import RunRecord
        from harness.report.write import write_run

        record = RunRecord(
            kind="pytest", profile=opts.profile, parity=self.results.parity, notes=list(self.results.notes),
            artifacts=self.results.engines, timing=self.results.timing, attribution=self.results.attribution,
            accuracy=self.results.accuracy,
            localisation=self.results.localisation, session=self.session_block(),
            skipped=dict(self.results.skipped), failures=list(self.results.failures),
            config={"cases": opts.cases, "exporters": opts.exporters, "workarounds": opts.workarounds,
                    "variants": opts.variants, "backends": opts.candidates, "device": opts.chain.device,
                    "opset": opts.chain.opset, "weights": str(opts.chain.weights or "bundled"),
                    "scene": str(opts.chain.scene or "bundled"), "exit_status": int(exitstatus),
                    "gpus": list(gpus)},
        )
        record.artifacts = record.artifacts + self.results.user_artifacts  # --harness-onnx/-engine facts
        if int(exitstatus) == int(pytest.ExitCode.INTERRUPTED):
            record.config["incomplete"] = True
            record.incomplete = f"interrupted after {sum(self.outcomes.values())} test outcomes"
            record.notes.append(f"incomplete: the session was {record.incomplete}; the rows above are the legs "
                                "that finished")
        try:
            self.results.notes.append(f"report: {write_run(record, opts.report_dir)}")
        except HarnessError as exc:
            self.results.notes.append(f"report not written: {exc}")

    def pytest_terminal_summary(self, terminalreporter, exitstatus: int) -> None:
        tr = terminalreporter
        if self.results.parity:
            from harness.verdict import leg_table

            tr.section("harness parity (vs torch strict FP32: each output's gated metrics, ! over the limit)")
            for line in leg_table(self.results.parity):
                tr.write_line(line)
        for row in self.results.parity:
            if not row["passed"] and (row.get("replay") or row.get("replay_error")):
                tr.write_line(f"replay of {row['id']}: {row.get('replay') or row.get('replay_error')}")
        if self.config.stash.get(GPUS_KEY, ()) and self.results.timing:
            tr.section("harness per GPU (median ms)")
            for row in merge_by_gpu(self.results.timing):
                tr.write_line("  ".join(f"{k}={v:.2f}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()))
        if self.results.attribution:
            from harness.localize import attribution_table

            tr.section("harness error attribution (depth, mm)")
            for case in dict.fromkeys(r["case"] for r in self.results.attribution):
                tr.write_line(f"case {case}:")
                tr.write_line(attribution_table([r for r in self.results.attribution if r["case"] == case]))
        for table in self.results.localisation:
            tr.section("harness localisation")
            tr.write_line(table)
        if self.results.engines:
            tr.section("harness engines")
            for row in self.results.engines:
                tr.write_line(f"{row['case']} {row['workaround']} {row['exporter']} {row['precision']}: {row['trt']}, "
                              f"{row['mib']} MiB, built in {row['build_seconds']} s ({row['cache']})")
        for note in self.results.notes:
            tr.write_line(note)
        if self.results.parity or self.results.skipped:  # the verdict at a glance, last
            from harness.verdict import verdict_line

            incomplete = (f"interrupted after {sum(self.outcomes.values())} test outcomes"
                          if int(exitstatus) == int(pytest.ExitCode.INTERRUPTED) else "")
            tr.write_line(verdict_line(self.results.parity, self.results.skipped, self.results.failures, incomplete))


def _gpu_name(device: Any) -> str | None:
    import torch

    return torch.cuda.get_device_name(device) if getattr(device, "type", "cpu") == "cuda" else None


def _add_speedups(rows: list[dict[str, Any]]) -> None:
    """Speed-up of every timed row over torch eager strict FP32 of the same case and device (and
    physical GPU: pinned workers all call theirs cuda:0)."""

    def key(r: dict[str, Any]) -> tuple[Any, ...]:
        return (r["case"], r["device"], r.get(ROW_FIELD))

    base = {key(r): r["median_ms"] for r in rows if r["backend"] == "torch-fp32" and "median_ms" in r}
    for row in rows:
        ref = base.get(key(row))
        if ref and row.get("median_ms"):
            row["speedup_vs_torch_fp32"] = ref / row["median_ms"]
