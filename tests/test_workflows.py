"""The GitHub Actions workflows (.github/workflows/) and the tox environments run what the README
and the harness define.

Plain-text checks always run; the structural checks need PyYAML (not a project dependency: they
skip without it) and the lint needs actionlint on PATH (skips without it).
"""

from __future__ import annotations

import argparse
import configparser
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from harness import cli

ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS = ROOT / ".github" / "workflows"
CPU, GPU = WORKFLOWS / "cpu.yml", WORKFLOWS / "gpu.yml"
GPU_SCRIPT = ROOT / ".ci" / "gpu-gate.sh"


def readme_test_command() -> str:
    section = (ROOT / "README.md").read_text().split("## Quick start", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.S)
    assert block
    return [line for line in block.group(1).splitlines() if line.strip() and not line.startswith("#")][1].strip()


def parse_harness(command: str, where: str) -> argparse.Namespace:
    """Parse ``python -m harness ...`` with the CLI's parser, doctor included (``${{ }}``
    expressions become a placeholder; tox's ``{posargs}`` is dropped)."""
    parser = cli.build_parser()
    args = re.sub(r"\$\{\{[^}]*\}\}", "EXPR", command.split("-m harness", 1)[1]).replace("{posargs}", "")
    argv = shlex.split(args)
    try:
        return parser.parse_args(argv)
    except SystemExit:
        pytest.fail(f"{where}: `{command}` does not parse")


def harness_commands(text: str) -> list[str]:
    """``python -m harness ...`` lines; the GPU script's ``"$PY" -m harness ...`` count too (its
    shell variables become placeholders)."""
    text = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    text = re.sub(r'"\$(PY|0)" -m harness', "python -m harness", text)
    found = [m.group(0) for m in re.finditer(r"python -m harness [^\n|;]+", text)]
    return [re.sub(r'"?\$\{?\w+\}?"?', "VALUE", c).rstrip("' \\") for c in found]


def test_workflows_exist():
    assert CPU.is_file() and GPU.is_file()


def test_cpu_workflow_runs_the_readme_test_command_on_each_python():
    text = CPU.read_text()
    assert "bash .ci/run" in text and readme_test_command() in (ROOT / ".ci" / "run").read_text()
    assert "runs-on: ubuntu-latest" in text
    assert 'python: ["3.10", "3.11", "3.12"]' in text
    assert re.search(r"on:\n  push:\n  pull_request:\n", text)
    upload = text.split("actions/upload-artifact@")[0].rsplit("- name:", 1)[1]
    assert "if: always()" in upload and "path: reports/" in text


def test_gpu_workflow_text():
    text = GPU.read_text()
    for needle in (
        "runs-on: [self-hosted, linux, gpu]",
        "workflow_dispatch:", "schedule:", "branches: [main]",
        "concurrency:", "cancel-in-progress: false",
        "HARNESS_COMMIT: ${{ github.sha }}",
        "bash .ci/gpu-gate.sh --label",
        "actions/upload-artifact@", "GITHUB_STEP_SUMMARY", "report.md",
    ):
        assert needle in text, needle
    order = [text.index(s) for s in ("actions/checkout@", "bash .ci/gpu-gate.sh", "actions/upload-artifact@",
                                     "GITHUB_STEP_SUMMARY")]
    assert order == sorted(order), "steps out of order"


def test_gpu_script_holds_every_step_of_the_job_in_order():
    text = GPU_SCRIPT.read_text()
    for needle in (
        '-c .ci/constraints.txt -e ".[test]"',
        "pip uninstall -q -y onnxruntime && .venv/bin/pip install -q onnxruntime-gpu",
        "--extra-index-url https://pypi.nvidia.com tensorrt",
        "-m harness doctor --require torch-cuda,ort-cuda",
        "-m pytest suites --harness-profile full",
        "-m harness bench --cases",
        'fail_on="median:15%"',
        '--fail-on "$fail_on"',
        "GITHUB_STEP_SUMMARY",
    ):
        assert needle in text, needle
    body = text.split("set -uo pipefail", 1)[1]
    order = [body.index(s) for s in ("python3 -m venv .venv", "harness doctor", "pytest suites", "harness bench",
                                     "harness compare", "GITHUB_STEP_SUMMARY")]
    assert order == sorted(order), "steps out of order"


def _fake_python(folder: Path, failing: str = "") -> Path:
    """A stand-in interpreter that logs each ``-m`` call, prints what the real commands print
    (bench: its report line), and exits 1 for the step named ``failing``."""
    script = folder / "python"
    script.write_text(f"""#!/usr/bin/env bash
echo "$*" >> {folder}/calls
case "$2 $3" in
  "harness bench") mkdir -p {folder}/r && echo '{{}}' > {folder}/r/run.json; echo "report: {folder}/r/report.md" ;;
esac
case "$2 $3" in *{failing or "never-fails"}*) exit 1 ;; esac
exit 0
""")
    script.chmod(0o755)
    return script


@pytest.mark.parametrize(("failing", "ran", "status"), [
    ("", ["doctor", "gate", "bench", "compare"], 0),
    ("doctor", ["doctor"], 1),
    ("suites", ["doctor", "gate", "bench", "compare"], 1),
])
def test_gpu_script_runs_the_steps_and_reports_each_exit_code(tmp_path, failing, ran, status):
    python = _fake_python(tmp_path, failing)
    result = subprocess.run(["bash", str(GPU_SCRIPT), "--no-setup", "--label", "ci-test"], cwd=ROOT, text=True,
                            capture_output=True, timeout=60, check=False, env={"PATH": "/usr/bin:/bin",
                                                                                "PYTHON": str(python)})
    assert result.returncode == status, result.stdout + result.stderr
    calls = (tmp_path / "calls").read_text().splitlines()
    assert [c.split()[1] if c.split()[1] == "pytest" else c.split()[2] for c in calls] == [
        {"gate": "pytest"}.get(step, step) for step in ran]
    if "compare" in ran:
        assert calls[-1] == f"-m harness compare {tmp_path}/r/run.json --fail-on median:15%"
    table = result.stdout.split("gpu-gate summary", 1)[1]
    for step in ("setup", "doctor", "gate", "bench", "compare"):
        row = next(line for line in table.splitlines() if line.startswith(f"| {step} |"))
        expected = "-" if step not in ran else ("1" if step == {"suites": "gate"}.get(failing, failing) else "0")
        assert row.split("|")[2].strip() == expected, (step, row)


def test_gpu_script_passes_its_fail_on_gate_to_compare(tmp_path):
    python = _fake_python(tmp_path)
    result = subprocess.run(["bash", str(GPU_SCRIPT), "--no-setup", "--fail-on", "median:5%"], cwd=ROOT, text=True,
                            capture_output=True, timeout=60, check=False, env={"PATH": "/usr/bin:/bin",
                                                                                "PYTHON": str(python)})
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "calls").read_text().splitlines()[-1] == (
        f"-m harness compare {tmp_path}/r/run.json --fail-on median:5%")


@pytest.mark.parametrize("gate", ["median5%", "median:5", "fast:5%"])
def test_gpu_script_refuses_an_unreadable_fail_on_before_any_step(tmp_path, gate):
    python = _fake_python(tmp_path)
    result = subprocess.run(["bash", str(GPU_SCRIPT), "--no-setup", "--fail-on", gate], cwd=ROOT, text=True,
                            capture_output=True, timeout=60, check=False, env={"PATH": "/usr/bin:/bin",
                                                                                "PYTHON": str(python)})
    assert result.returncode == 2
    assert result.stderr.startswith(f"gpu-gate: --fail-on {gate}: expected <min|median|mean|p90|p95|p99>:<percent>%")
    assert not (tmp_path / "calls").exists()  # no step ran


@pytest.mark.parametrize("gate", ["median:5%", "p99:12.5%", "min:0%", "median5%", "median:5", "fast:5%",
                                  "mean:%", "p90:1.%"])
def test_gpu_script_and_harness_compare_accept_the_same_fail_on(tmp_path, gate):
    """The script checks --fail-on before its steps (the venv may not exist yet); its pattern must
    accept exactly what harness compare's Gate.parse accepts."""
    from harness.errors import InvalidArgument
    from harness.report.compare_runs import Gate

    try:
        Gate.parse(gate)
        parses = True
    except InvalidArgument:
        parses = False
    python = _fake_python(tmp_path)
    result = subprocess.run(["bash", str(GPU_SCRIPT), "--no-setup", "--fail-on", gate], cwd=ROOT, text=True,
                            capture_output=True, timeout=60, check=False, env={"PATH": "/usr/bin:/bin",
                                                                                "PYTHON": str(python)})
    assert (result.returncode == 0) == parses, (gate, result.stderr)


_DEFAULT_WORKERS = min(8, max(1, len(os.sched_getaffinity(0)) // 2))  # what nproc counts


def test_gpu_script_gives_each_worker_32_gib_of_the_gpu(tmp_path):
    # 8 workers exhausted an H200's 139 GiB: on the H200 machine (16 cores, nvidia-smi 143771 MiB) 4
    python = _fake_python(tmp_path)
    tools = tmp_path / "bin"
    tools.mkdir()
    for name, answer in (("nvidia-smi", "143771"), ("nproc", "16")):
        (tools / name).write_text(f"#!/usr/bin/env bash\necho {answer}\n")
        (tools / name).chmod(0o755)
    env = {"PATH": f"{tools}:/usr/bin:/bin", "PYTHON": str(python)}
    for args, workers in (((), 4), (("--workers", "8"), 8)):  # an explicit count wins
        (tmp_path / "calls").unlink(missing_ok=True)
        result = subprocess.run(["bash", str(GPU_SCRIPT), "--no-setup", *args], cwd=ROOT, text=True, capture_output=True,
                                timeout=60, check=False, env=env)
        assert result.returncode == 0, result.stdout + result.stderr
        assert (tmp_path / "calls").read_text().splitlines()[1] == (
            f"-m pytest suites --harness-profile full -n {workers} --dist worksteal --durations=15")


@pytest.mark.parametrize(("args", "gate"), [
    ((), f"-m pytest suites --harness-profile full -n {_DEFAULT_WORKERS} --dist worksteal --durations=15"),
    (("--workers", "0"), "-m pytest suites --harness-profile full --durations=15"),
    (("--workers", "8"), "-m pytest suites --harness-profile full -n 8 --dist worksteal --durations=15"),
])
def test_gpu_script_spreads_the_gate_over_xdist_workers(tmp_path, args, gate):
    python = _fake_python(tmp_path)
    result = subprocess.run(["bash", str(GPU_SCRIPT), "--no-setup", *args], cwd=ROOT, text=True, capture_output=True,
                            timeout=60, check=False, env={"PATH": "/usr/bin:/bin", "PYTHON": str(python)})
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "calls").read_text().splitlines()[1] == gate


def test_gpu_script_refuses_unknown_arguments():
    result = subprocess.run(["bash", str(GPU_SCRIPT), "--frobnicate"], cwd=ROOT, text=True, capture_output=True,
                            timeout=30, check=False)
    assert result.returncode == 2 and "unknown argument --frobnicate" in result.stderr
    result = subprocess.run(["bash", str(GPU_SCRIPT), "--workers", "all"], cwd=ROOT, text=True, capture_output=True,
                            timeout=30, check=False)
    assert result.returncode == 2 and "--workers all: expected a whole number" in result.stderr


@pytest.mark.parametrize("path", [CPU, GPU, GPU_SCRIPT, ROOT / "tox.ini"], ids=lambda p: p.name)
def test_harness_commands_parse(path):
    commands = harness_commands(path.read_text())
    assert commands or path in (CPU, GPU)
    for command in commands:
        parse_harness(command, path.name)


def test_gpu_gate_uses_a_registered_option_and_profile():
    from harness.timing import PROFILES

    assert '"--harness-profile"' in (ROOT / "harness" / "plugin.py").read_text() and "full" in PROFILES


def test_tox_environments_are_described():
    tox = configparser.ConfigParser(interpolation=None)
    tox.read(ROOT / "tox.ini")
    envs = {s.split(":", 1)[1]: tox[s] for s in tox.sections() if s.startswith("testenv:")}
    assert {"test", "gpu", "lint", "docs", "bench"} <= set(envs)
    assert all(env.get("description", "").strip() for env in envs.values())
    docs = envs["docs"]["commands"]
    for needle in ("harness run --cases small --report-dir {envtmpdir}", "harness doctor", "harness make-scene {envtmpdir}",
                   "reports/baselines/h100.json {toxinidir}/reports/baselines/h200.json --out {envtmpdir}"):
        assert needle in docs, needle
    assert "python -m harness bench --cases seed --profile full" in envs["bench"]["commands"]


def test_workflow_structure():
    yaml = pytest.importorskip("yaml", reason="PyYAML not installed (not a project dependency)")
    cpu, gpu = yaml.safe_load(CPU.read_text()), yaml.safe_load(GPU.read_text())
    on = cpu.get("on", cpu.get(True))  # YAML 1.1 reads the key `on` as True
    assert set(on) == {"push", "pull_request"}
    (job,) = cpu["jobs"].values()
    assert job["runs-on"] == "ubuntu-latest" and job["strategy"]["matrix"]["python"] == ["3.10", "3.11", "3.12"]
    assert any(step.get("run") == "bash .ci/run" for step in job["steps"])
    upload = next(s for s in job["steps"] if str(s.get("uses", "")).startswith("actions/upload-artifact@"))
    assert upload["if"] == "always()" and upload["with"]["path"] == "reports/"

    on = gpu.get("on", gpu.get(True))
    assert on["push"]["branches"] == ["main"] and "workflow_dispatch" in on and on["schedule"][0]["cron"]
    assert gpu["concurrency"]["cancel-in-progress"] is False
    (job,) = gpu["jobs"].values()
    assert job["runs-on"] == ["self-hosted", "linux", "gpu"]
    assert job["env"]["HARNESS_COMMIT"] == "${{ github.sha }}"
    steps = job["steps"]
    assert any(s.get("run", "").startswith("bash .ci/gpu-gate.sh") for s in steps)
    always = [s for s in steps if s.get("if") == "always()"]
    assert any(str(s.get("uses", "")).startswith("actions/upload-artifact@") for s in always)
    assert any("GITHUB_STEP_SUMMARY" in s.get("run", "") for s in always)


def test_actionlint():
    actionlint = shutil.which("actionlint")
    if actionlint is None:
        pytest.skip("actionlint not installed")
    result = subprocess.run([actionlint, str(CPU), str(GPU)], cwd=ROOT, capture_output=True, text=True, timeout=120,
                            check=False)
    assert result.returncode == 0, result.stdout + result.stderr
