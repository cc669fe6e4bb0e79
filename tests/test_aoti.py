"""torch-aoti: the model through torch.export and AOTInductor into a cached .pt2 package, a
backend declared in one module (harness/backends/aoti_runner.py) and reached by every front
through the registry. A one-convolution model keeps the compiles short here; the MVSNet leg
itself runs in suites/test_parity.py and suites/test_benchmark.py."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
import torch

from harness.backends import aoti_runner, registry
from harness.bench import CPU_BACKENDS, CUDA_BACKENDS, BenchSpec
from harness.chain import CANDIDATES, MODEL_LEG, Chain, ChainConfig, Leg, plan_legs
from harness.errors import BackendUnavailable

pytestmark = pytest.mark.skipif(aoti_runner.aoti_missing() is not None,
                                reason=f"torch-aoti: {aoti_runner.aoti_missing()}")


class Tiny(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.conv(x))


def test_declared_once_and_reached_by_every_front():
    spec = registry.get("torch-aoti")
    assert (spec.consumes, spec.precision, spec.candidate) == ("model", "fp32", True)
    assert "torch-aoti" in CANDIDATES and "torch-aoti" in CPU_BACKENDS and "torch-aoti" in CUDA_BACKENDS
    assert BenchSpec("torch-aoti", "small").precision == "fp32"
    # a model consumer is one leg per case, never crossed with graph variants or exporters
    legs = plan_legs(("small", "seed"), ("precomputed", "closed_form"), ("torchscript", "dynamo"),
                     ("raw", "simplified"), ("torch-aoti",))
    assert legs == [Leg("torch-aoti", *MODEL_LEG, "small"), Leg("torch-aoti", *MODEL_LEG, "seed")]


def test_the_chain_hands_it_the_cache_and_the_model_digest(tmp_path):
    chain = Chain(ChainConfig(device="cpu", cache_dir=tmp_path))
    assert chain.model_context("torch-aoti") == {"cache_dir": tmp_path, "model_digest": chain.export_digest}
    assert chain.model_context("torch-fp32") == {}


@pytest.fixture
def cheap_compile(monkeypatch):
    """The compile settings of the runner's loader probe (``aoti_runner._PROBE``): no precompiled
    headers, the C++ wrapper at -O0, and the CPU's vector ISA taken from its flags rather than
    verified by compiling and loading a test library per ISA (six g++ calls, about 11 s on a
    2-core machine, in the compile and again in the load check's child). These tests are about the
    runner (cache, facts, load check), not Inductor's code; the MVSNet package keeps Inductor's
    defaults and is built in suites/test_accuracy.py."""
    import torch._inductor.config as config

    settings = {f"aot_inductor.{name}": value for name, value in (("compile_wrapper_opt_level", "O0"),
                                                                   ("precompile_headers", False))
                if hasattr(config.aot_inductor, name)}
    if hasattr(config.cpp, "vec_isa_ok"):
        settings["cpp.vec_isa_ok"] = True
        monkeypatch.setenv("TORCHINDUCTOR_VEC_ISA_OK", "1")  # the load check's child reads it at import
    with config.patch(settings):  # Inductor's own patcher (monkeypatch's undo deletes its class attributes)
        yield


def test_package_matches_eager_and_is_cached_by_content(tmp_path, monkeypatch, cheap_compile):
    model, x = Tiny().eval(), torch.rand(1, 3, 16, 16)
    runner = aoti_runner.AotiRunner(model, cache_dir=tmp_path, model_digest="tiny-1").prepare()
    out = runner._package((x,))(x)
    out = out[0] if isinstance(out, (list, tuple)) else out
    assert torch.allclose(out, model(x), atol=1e-5)
    facts = runner.describe()
    assert facts["cache"] == "miss" and facts["load_check"] == "ok" and facts["package_mib"] > 0
    # the record names the proxy-executor fallbacks (none: a convolution has its C shims) and keeps the log
    assert facts["proxy_fallbacks"] == [] and isinstance(facts["compile_log"], list)
    assert any((tmp_path / "inductor").iterdir())  # Inductor compiled into the harness's cache, not /tmp
    # a second runner (a later session) hits the package: no export, no compile
    monkeypatch.setattr(aoti_runner.AotiRunner, "_build", lambda *a: pytest.fail("rebuilt a cached package"))
    again = aoti_runner.AotiRunner(model, cache_dir=tmp_path, model_digest="tiny-1").prepare()
    again._package((x,))
    assert again.describe()["cache"] == "hit"
    assert again.describe()["package_sha256"] == facts["package_sha256"]


def test_the_load_check_child_caches_into_the_folder_the_compile_used(tmp_path, monkeypatch):
    # loading checks the CPU's vector ISA by compiling test libraries: the child finds the compile's
    seen = tmp_path / "seen.txt"
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    monkeypatch.setattr(aoti_runner, "_CHECK", f"import os, pathlib; pathlib.Path({str(seen)!r}).write_text("
                        "os.environ.get('TORCHINDUCTOR_CACHE_DIR', '')); print('stage done')")
    runner = aoti_runner.AotiRunner(Tiny().eval(), cache_dir=tmp_path / "cache", model_digest="tiny-env").prepare()
    assert runner._check_in_child(tmp_path / "model.pt2", (torch.rand(1, 3, 8, 8),)) == "ok"
    assert seen.read_text() == str((tmp_path / "cache" / "inductor").resolve())
    # a folder the user chose wins, in the child as in the compile
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "mine"))
    assert runner._check_in_child(tmp_path / "model.pt2", (torch.rand(1, 3, 8, 8),)) == "ok"
    assert seen.read_text() == str(tmp_path / "mine")


def _no_compile(monkeypatch):
    """The crash tests are about the verdict, not the compile (tested above): the package is a
    placeholder file that the (crashing) check never reads."""
    monkeypatch.setattr(torch._inductor, "aoti_compile_and_package",
                        lambda exported, package_path: Path(package_path).write_bytes(b"placeholder") and package_path)


def test_a_package_that_crashes_its_loader_is_a_skip_with_the_stage_and_signal(tmp_path, monkeypatch):
    # what the H200 image does (torch 2.11+cu130 segfaults loading any CUDA package), played on the CPU
    monkeypatch.setattr(aoti_runner, "_CHECK",
                        "import os, signal; print('stage load', flush=True); os.kill(os.getpid(), signal.SIGSEGV)")
    _no_compile(monkeypatch)
    model, x = Tiny().eval(), torch.rand(1, 3, 16, 16)
    runner = aoti_runner.AotiRunner(model, cache_dir=tmp_path, model_digest="tiny-crash").prepare()
    with pytest.raises(BackendUnavailable, match=r"loading the package crashed the process \(SIGSEGV\)") as caught:
        runner._package((x,))
    assert caught.value.backend == "torch-aoti" and "torch " + torch.__version__ in caught.value.missing
    # the verdict is stored with the package: a later session skips at once, without compiling
    monkeypatch.setattr(aoti_runner.AotiRunner, "_build", lambda *a: pytest.fail("rebuilt a cached package"))
    with pytest.raises(BackendUnavailable, match="SIGSEGV"):
        aoti_runner.AotiRunner(model, cache_dir=tmp_path, model_digest="tiny-crash").prepare()._package((x,))


#: The probe's compile child, played: it writes placeholder files where the package and the feed go.
PLACEHOLDER_PROBE = "import sys, pathlib\nfor a in sys.argv[1:]: pathlib.Path(a).write_bytes(b'placeholder')"
SEGFAULT_CHECK = "import os, signal; print('stage load', flush=True); os.kill(os.getpid(), signal.SIGSEGV)"


def test_a_loader_that_crashes_on_the_probe_skips_before_the_model_is_compiled(tmp_path, monkeypatch):
    # the H200's case: the loader crashes on any package, so minutes of compiling MVSNet would be wasted
    monkeypatch.setattr(aoti_runner, "_CHECK", SEGFAULT_CHECK)
    monkeypatch.setattr(aoti_runner.AotiRunner, "_build", lambda *a: pytest.fail("compiled the model after a failed probe"))
    monkeypatch.setattr(aoti_runner, "_PROBE", PLACEHOLDER_PROBE)
    model, x = Tiny().eval(), torch.rand(1, 3, 16, 16)
    runner = aoti_runner.AotiRunner(model, cache_dir=tmp_path, model_digest="tiny-probe", probe_loader=True).prepare()
    with pytest.raises(BackendUnavailable, match=r"loading the package crashed the process \(SIGSEGV\).*one-convolution "
                       r"probe package before compiling the model"):
        runner._package((x,))
    # the probe's verdict is cached per torch build and device: the next session skips without compiling anything
    monkeypatch.setattr(aoti_runner.AotiRunner, "_probe_build", lambda *a: pytest.fail("probed again"))
    with pytest.raises(BackendUnavailable, match="probe package"):
        aoti_runner.AotiRunner(model, cache_dir=tmp_path, model_digest="tiny-probe", probe_loader=True).prepare()._package((x,))


def test_warm_probes_in_the_background_and_the_runner_waits_for_that_probe(tmp_path, monkeypatch):
    # run starts the probe before its first leg (chain.warm); the runner joins it instead of probing again
    monkeypatch.setattr(aoti_runner, "_CHECK", SEGFAULT_CHECK)
    monkeypatch.setattr(aoti_runner, "_PROBE", "import time; time.sleep(1)\n" + PLACEHOLDER_PROBE)
    monkeypatch.setattr(aoti_runner.torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(aoti_runner, "_PROBES", {})
    aoti_runner.warm(Tiny(), device="cpu", cache_dir=tmp_path)
    assert aoti_runner._PROBES == {}  # a CPU run has no probe to overlap (probe_loader is off there)
    aoti_runner.start_probe(tmp_path)
    assert aoti_runner._PROBES[tmp_path].is_alive()  # returned while the probe's compile sleeps
    monkeypatch.setattr(aoti_runner.AotiRunner, "_probe_build", lambda *a: pytest.fail("probed in the foreground as well"))
    runner = aoti_runner.AotiRunner(Tiny().eval(), cache_dir=tmp_path, model_digest="tiny-warm", probe_loader=True).prepare()
    with pytest.raises(BackendUnavailable, match=r"SIGSEGV.*one-convolution probe package"):
        runner._package((torch.rand(1, 3, 8, 8),))
    assert aoti_runner._PROBES == {}


def test_a_probe_that_cannot_compile_is_a_skip_that_says_so(tmp_path, monkeypatch):
    monkeypatch.setattr(aoti_runner, "_PROBE", "import sys; print('no compiler for this', file=sys.stderr); sys.exit(1)")
    runner = aoti_runner.AotiRunner(Tiny().eval(), cache_dir=tmp_path, model_digest="tiny-nocompile", probe_loader=True).prepare()
    with pytest.raises(BackendUnavailable, match=r"compiling the probe package failed \(no compiler for this\)"):
        runner._package((torch.rand(1, 3, 8, 8),))


def test_a_probe_compile_past_its_timeout_is_a_skip_that_says_so(tmp_path, monkeypatch):
    monkeypatch.setattr(aoti_runner, "CHECK_TIMEOUT_S", 1.0)
    monkeypatch.setattr(aoti_runner, "_PROBE", "import time; time.sleep(30)")
    runner = aoti_runner.AotiRunner(Tiny().eval(), cache_dir=tmp_path, model_digest="tiny-slow", probe_loader=True).prepare()
    with pytest.raises(BackendUnavailable, match=r"compiling the probe package took over 1 s"):
        runner._package((torch.rand(1, 3, 8, 8),))


def test_the_probe_runs_on_cuda_devices_only_by_default():
    model = Tiny().eval()
    assert aoti_runner.AotiRunner(model, device="cpu").probe_loader is False
    assert aoti_runner.AotiRunner(model, device="cpu", probe_loader=True).probe_loader is True


def test_crash_text_names_the_stage_and_how_it_ended():
    assert aoti_runner.describe_crash(-signal.SIGSEGV, ["load"]) == "loading the package crashed the process (SIGSEGV)"
    assert aoti_runner.describe_crash(-signal.SIGABRT, ["load", "run"]) == "running the package crashed the process (SIGABRT)"
    assert aoti_runner.describe_crash(1, []) == "starting the check crashed the process (exit status 1)"


def test_without_a_digest_nothing_is_cached(tmp_path, cheap_compile):
    model, x = Tiny().eval(), torch.rand(1, 3, 8, 8)
    runner = aoti_runner.AotiRunner(model, cache_dir=tmp_path, load_check=False).prepare()
    runner._package((x,))
    assert runner.describe()["cache"].startswith("none") and not any(tmp_path.iterdir())
    runner.close()


def test_no_compiler_is_the_reason_it_is_unavailable(monkeypatch):
    monkeypatch.setenv("CXX", "no-such-compiler-here")
    assert aoti_runner.aoti_missing() == "no C++ compiler for AOTInductor ($CXX, g++, c++ or clang++ on PATH)"
    with pytest.raises(BackendUnavailable, match=r"no C\+\+ compiler"):
        registry.make_runner("torch-aoti", Tiny())


def test_compile_warnings_go_to_the_record_not_the_console(caplog):
    import logging
    import warnings

    lines: list[str] = []
    inductor = logging.getLogger("torch._inductor")
    before = (list(inductor.handlers), inductor.propagate)
    from harness.backends.compiling import compile_log

    with caplog.at_level(logging.WARNING), compile_log(lines):
        message = "aten.linalg_inv_ex.default is missing a c-shim implementation, using proxy executor as fallback"
        logging.getLogger("torch._inductor.ir").warning(message)
        logging.getLogger("torch._inductor.ir").warning(message)  # kept once
        warnings.warn("an old export API", FutureWarning, stacklevel=1)
    assert lines == [message, "FutureWarning: an old export API"]
    assert "c-shim" not in caplog.text
    assert (list(inductor.handlers), inductor.propagate) == before  # torch's own logging restored


def test_children_run_without_core_dumps():
    # a crashing load check of a CUDA process took 61 s on the H200 machine while the kernel dumped it;
    # the harness may run where core dumps are on (the children would inherit the limit)
    resource = pytest.importorskip("resource")
    before = resource.getrlimit(resource.RLIMIT_CORE)
    resource.setrlimit(resource.RLIMIT_CORE, (before[1], before[1]))
    try:
        done = aoti_runner._run_child("import resource; print(resource.getrlimit(resource.RLIMIT_CORE)[0])")
    finally:
        resource.setrlimit(resource.RLIMIT_CORE, before)
    assert done.returncode == 0, done.stderr
    assert 0 <= int(done.stdout.strip()) <= 1 or before[1] == 0
