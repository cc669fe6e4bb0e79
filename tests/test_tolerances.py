"""Unit tests of harness/tolerances.py against the real fixtures/tolerances.toml and broken copies."""

from __future__ import annotations

import sys

import pytest

from harness.errors import ConfigError, MissingFile
from harness.model.mvsnet import OUTPUT_NAMES
from harness.tolerances import DEFAULT_TOLERANCES, KNOWN_METRICS, Tolerances, family

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
    gates = real.lookup("torch-fp32", "ort-cpu-simplified", "fp32", OUTPUT_NAMES)
    assert set(gates) == set(OUTPUT_NAMES)
    for output in OUTPUT_NAMES:
        assert gates[output] == {m: float(v) for m, v in raw_table["torch-vs-ort"]["fp32"][output].items()}
        assert all(isinstance(v, float) for v in gates[output].values())


def test_lookup_is_the_same_for_every_member_of_a_family(real):
    assert real.lookup("torch-fp32", "ort-cpu", "fp32", OUTPUT_NAMES) == \
        real.lookup("torch-fp32", "ort-cuda", "fp32", OUTPUT_NAMES)


def test_every_committed_gate_is_a_known_metric(raw_table):
    for pair, precisions in raw_table.items():
        if pair == "stages":  # localisation limits: one positive number per precision
            assert all(isinstance(v, float) and v > 0 for v in precisions.values())
            continue
        for outputs in precisions.values():
            for gates in outputs.values():
                assert set(gates) <= KNOWN_METRICS


def test_missing_pair_is_a_config_error_naming_the_table_to_add(real):
    with pytest.raises(ConfigError) as info:
        real.lookup("torch-fp32", "openvino-cpu", "fp32", OUTPUT_NAMES)
    message = str(info.value)
    assert "no tolerance for this comparison" in message
    assert "['torch-vs-openvino'.fp32.<output>]" in message
    assert "depth" in message and "photometric_confidence" in message
    assert str(DEFAULT_TOLERANCES) in message
    assert isinstance(info.value, ValueError)


def test_missing_precision_is_a_config_error_naming_the_table(real):
    with pytest.raises(ConfigError, match=r"\['torch-vs-ort'\.int8\.<output>\]"):
        real.lookup("torch-fp32", "ort-cpu", "int8", OUTPUT_NAMES)


def test_missing_output_is_a_config_error_naming_it(real):
    with pytest.raises(ConfigError, match="no tolerance for some outputs") as info:
        real.lookup("torch-fp32", "ort-cpu", "fp32", ("depth", "normal_map"))
    assert "normal_map" in str(info.value)
    assert "['torch-vs-ort'.fp32]" in str(info.value)


def test_a_valid_custom_file_loads(tmp_path):
    path = _write(tmp_path, '["trt-vs-trt".fp16.depth]\nmax_abs = 2\n')
    gates = Tolerances.load(path).lookup("trt-fp32", "trt-fp16", "fp16", ("depth",))
    assert gates == {"depth": {"max_abs": 2.0}}


def test_unknown_metric_is_a_config_error(tmp_path):
    path = _write(tmp_path, '["torch-vs-ort".fp32.depth]\nmax_squared = 1e-3\n')
    with pytest.raises(ConfigError, match="unknown metric") as info:
        Tolerances.load(path)
    assert "max_squared" in str(info.value)
    assert "max_sq_err" in str(info.value)  # the allowed names are listed


@pytest.mark.parametrize("value", ["-1e-3", '"small"', "true"])
def test_negative_or_non_numeric_limit_is_a_config_error(tmp_path, value):
    path = _write(tmp_path, f'["torch-vs-ort".fp32.depth]\nmax_sq_err = {value}\n')
    with pytest.raises(ConfigError, match="limit must be a non-negative number") as info:
        Tolerances.load(path)
    assert "max_sq_err" in str(info.value)


def test_table_that_is_not_a_pair_is_a_config_error(tmp_path):
    path = _write(tmp_path, "[torch]\nfp32 = 1\n")
    with pytest.raises(ConfigError, match="not a pair table"):
        Tolerances.load(path)


def test_precision_that_is_not_a_table_is_a_config_error(tmp_path):
    path = _write(tmp_path, '["torch-vs-ort"]\nfp32 = 1\n')
    with pytest.raises(ConfigError) as info:
        Tolerances.load(path)
    assert "torch-vs-ort" in str(info.value)


def test_output_that_is_not_a_table_is_a_config_error(tmp_path):
    path = _write(tmp_path, '["torch-vs-ort".fp32]\ndepth = 1e-3\n')
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
