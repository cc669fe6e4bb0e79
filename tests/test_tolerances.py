"""Unit tests of harness/gates/limits.py against the real fixtures/tolerances.toml and broken copies."""

from __future__ import annotations

import sys

import pytest

from harness.errors import ConfigError, MissingFile
from harness.gates.limits import DEFAULT_TOLERANCES, KNOWN_METRICS, Tolerances, family, machine_class
from harness.model.mvsnet import OUTPUT_NAMES

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib


@pytest.fixture(scope="module")
def real() -> Tolerances:
    return Tolerances.load()


@pytest.fixture(scope="module")
def raw_table() -> dict:
    return tomllib.loads(DEFAULT_TOLERANCES.read_text(encoding="utf-8"))


def _write(tmp_path, text: str):
    path = tmp_path / "tolerances.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_default_file_is_the_committed_fixture(real):
    assert DEFAULT_TOLERANCES.name == "tolerances.toml"
    assert DEFAULT_TOLERANCES.parent.name == "fixtures"
    assert real.source == str(DEFAULT_TOLERANCES)


@pytest.mark.parametrize("name, expected", [("torch-fp32", "torch"), ("ort-cpu", "ort"), ("ort-cuda-raw", "ort"),
                                            ("trt-fp16", "trt"), ("torch", "torch")])
def test_family_is_the_first_word(name, expected):
    assert family(name) == expected


def test_lookup_by_family_pair_returns_the_file_values(real, raw_table):
    gates = real.lookup("torch-fp32", "ort-cpu-simplified", "fp32", OUTPUT_NAMES, machine="cpu")
    assert set(gates) == set(OUTPUT_NAMES)
    for output in OUTPUT_NAMES:
        assert gates[output] == {m: float(v) for m, v in raw_table["cpu"]["torch-vs-ort"]["fp32"][output].items()}
        assert all(isinstance(v, float) for v in gates[output].values())


def test_a_backend_table_wins_over_its_family(tmp_path):
    path = _write(tmp_path, '[cpu."torch-vs-ort".fp16.depth]\nmax_abs = 2\n'
                            '[cpu."torch-vs-ort-cpu-fp16".fp16.depth]\nmax_abs = 1\n')
    tol = Tolerances.load(path)
    assert tol.lookup("torch-fp32", "ort-cpu-fp16", "fp16", ("depth",))["depth"] == {"max_abs": 1.0}
    assert tol.lookup("torch-fp32", "ort-cuda-fp16", "fp16", ("depth",))["depth"] == {"max_abs": 2.0}


def test_machine_classes_have_their_own_limits(tmp_path):
    path = _write(tmp_path, '[cpu."torch-vs-ort".fp32.depth]\nmax_abs = 1e-3\n[cuda."torch-vs-ort".fp32.depth]\nmax_abs = 0.1\n')
    tol = Tolerances.load(path)
    assert tol.lookup("torch-fp32", "ort-cpu", "fp32", ("depth",), machine="cpu")["depth"] == {"max_abs": 1e-3}
    assert tol.lookup("torch-fp32", "ort-cpu", "fp32", ("depth",), machine="cuda")["depth"] == {"max_abs": 0.1}


@pytest.mark.parametrize(("devices", "expected"), [(("cpu", "cpu"), "cpu"), (("cuda", "cpu"), "cuda"),
                                                   (("cpu", "cuda:1"), "cuda"), ((None,), "cpu")])
def test_machine_class_is_cuda_when_any_side_ran_on_cuda(devices, expected):
    assert machine_class(*devices) == expected


def test_a_class_without_tables_says_to_calibrate_there(tmp_path):
    tol = Tolerances.load(_write(tmp_path, '[cpu."torch-vs-ort".fp32.depth]\nmax_abs = 1e-3\n'))
    with pytest.raises(ConfigError, match="no gates for this machine class") as info:
        tol.lookup("torch-fp32", "ort-cuda", "fp32", ("depth",), machine="cuda")
    assert "calibrate" in str(info.value)


def test_every_committed_gate_is_a_known_metric(raw_table):
    for machine, pairs in raw_table.items():
        if machine == "rule":
            continue
        for pair, precisions in pairs.items():
            if pair == "stages":
                for stages in precisions.values():
                    assert all(v > 0 for table in stages.values() for v in table.values())
                continue
            for outputs in precisions.values():
                for gates in outputs.values():
                    assert set(gates) <= KNOWN_METRICS


def test_missing_pair_is_a_config_error_naming_the_table_to_add(real):
    with pytest.raises(ConfigError) as info:
        real.lookup("torch-fp32", "openvino-cpu", "fp32", OUTPUT_NAMES)
    message = str(info.value)
    assert "no tolerance for this comparison" in message
    assert "[cpu.'torch-vs-openvino'.fp32.<output>]" in message
    assert "depth" in message and "photometric_confidence" in message
    assert str(DEFAULT_TOLERANCES) in message
    assert isinstance(info.value, ValueError)


def test_missing_precision_is_a_config_error_naming_the_table(real):
    with pytest.raises(ConfigError, match=r"\[cpu\.'torch-vs-ort'\.int8\.<output>\]"):
        real.lookup("torch-fp32", "ort-cpu", "int8", OUTPUT_NAMES)


def test_missing_output_is_a_config_error_naming_it(real):
    with pytest.raises(ConfigError, match="no tolerance for some outputs") as info:
        real.lookup("torch-fp32", "ort-cpu", "fp32", ("depth", "normal_map"))
    assert "normal_map" in str(info.value)
    assert "[cpu.'torch-vs-ort'.fp32]" in str(info.value)


def test_a_valid_custom_file_loads(tmp_path):
    path = _write(tmp_path, '[cuda."trt-vs-trt".fp16.depth]\nmax_abs = 2\n')
    gates = Tolerances.load(path).lookup("trt-fp32", "trt-fp16", "fp16", ("depth",), machine="cuda")
    assert gates == {"depth": {"max_abs": 2.0}}


def test_a_table_outside_a_machine_class_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="not a machine-class table") as info:
        Tolerances.load(_write(tmp_path, '["torch-vs-ort".fp32.depth]\nmax_abs = 1\n'))
    assert "calibrate --derive" in str(info.value)


def test_stage_limits_of_a_measured_candidate_count_and_others_borrow_as_diagnostics(tmp_path):
    tol = Tolerances.load(_write(tmp_path, '[cpu.stages."ort-cpu".fp32]\nwarped = 1e-4\ndepth = 3e-3\n'
                                           '[cpu.stages."ort-cpu-fp16".fp16]\nwarped = 5e-3\n'))
    assert tol.stage_limits("ort-cpu", "fp32") == {"warped": 1e-4, "depth": 3e-3, "default": 1e-4}
    assert tol.stages_measured("ort-cpu", "fp32") and not tol.stages_measured("ort-cuda", "fp32", machine="cuda")
    assert tol.stage_limits("ort-cuda", "fp32", machine="cuda")["warped"] == 1e-4  # a diagnostic only
    assert tol.stage_limits("trt-tf32", "tf32", machine="cuda")["warped"] == 5e-3  # tf32: the fp16 table
    assert tol.stage_limit("fp32") == 1e-4


def test_unknown_metric_is_a_config_error(tmp_path):
    path = _write(tmp_path, '[cpu."torch-vs-ort".fp32.depth]\nmax_squared = 1e-3\n')
    with pytest.raises(ConfigError, match="unknown metric") as info:
        Tolerances.load(path)
    assert "max_squared" in str(info.value)
    assert "max_sq_err" in str(info.value)  # the allowed names are listed


@pytest.mark.parametrize("value", ["-1e-3", '"small"', "true"])
def test_negative_or_non_numeric_limit_is_a_config_error(tmp_path, value):
    path = _write(tmp_path, f'[cpu."torch-vs-ort".fp32.depth]\nmax_sq_err = {value}\n')
    with pytest.raises(ConfigError, match="limit must be a non-negative number") as info:
        Tolerances.load(path)
    assert "max_sq_err" in str(info.value)


def test_table_that_is_not_a_pair_is_a_config_error(tmp_path):
    path = _write(tmp_path, "[cpu.torch]\nfp32 = 1\n")
    with pytest.raises(ConfigError, match="not a pair table"):
        Tolerances.load(path)


def test_precision_that_is_not_a_table_is_a_config_error(tmp_path):
    path = _write(tmp_path, '[cpu."torch-vs-ort"]\nfp32 = 1\n')
    with pytest.raises(ConfigError) as info:
        Tolerances.load(path)
    assert "torch-vs-ort" in str(info.value)


def test_output_that_is_not_a_table_is_a_config_error(tmp_path):
    path = _write(tmp_path, '[cpu."torch-vs-ort".fp32]\ndepth = 1e-3\n')
    with pytest.raises(ConfigError, match="not a table of gates"):
        Tolerances.load(path)


def test_invalid_toml_is_a_config_error(tmp_path):
    path = _write(tmp_path, '["torch-vs-ort".fp32.depth\nmax_sq_err = = 1\n')
    with pytest.raises(ConfigError, match="not valid TOML") as info:
        Tolerances.load(path)
    assert str(path) in str(info.value)


def test_missing_file_is_missing_file(tmp_path):
    with pytest.raises(MissingFile, match="tolerances file not found") as info:
        Tolerances.load(tmp_path / "absent.toml")
    assert isinstance(info.value, FileNotFoundError)
    assert "--harness-tolerances" in str(info.value)


