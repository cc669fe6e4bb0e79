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
        if pair == "cases":  # per-case overrides: validated on load, checked below
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


# -- per-case overrides -------------------------------------------------------------------------

BASE = """
[stages]
fp32 = 1e-4
["torch-vs-ort".fp32.depth]
max_intervals = 0.1
["torch-vs-ort".fp32.photometric_confidence]
max_sq_err_stable = 1e-5
agreement = 0.999
"""


def test_a_case_override_tightens_the_family_then_the_backend(tmp_path):
    path = _write(tmp_path, BASE + """
[cases.small."torch-vs-ort".fp32.depth]
max_intervals = 0.01
[cases.small."torch-vs-ort-cpu".fp32.depth]
max_intervals = 3e-3
[cases.small."torch-vs-ort-cpu".fp32.photometric_confidence]
agreement = 0.9999
""")
    tol = Tolerances.load(path)
    assert tol.lookup("torch-fp32", "ort-cpu", "fp32", OUTPUT_NAMES, case="small") == {
        "depth": {"max_intervals": 3e-3},
        "photometric_confidence": {"max_sq_err_stable": 1e-5, "agreement": 0.9999}}
    assert tol.lookup("torch-fp32", "ort-cuda", "fp32", OUTPUT_NAMES, case="small")["depth"] == {"max_intervals": 0.01}
    assert tol.lookup("torch-fp32", "ort-cpu", "fp32", OUTPUT_NAMES, case="seed")["depth"] == {"max_intervals": 0.1}
    assert tol.lookup("torch-fp32", "ort-cpu", "fp32", OUTPUT_NAMES)["depth"] == {"max_intervals": 0.1}


@pytest.mark.parametrize(("override", "problem"), [
    ('[cases.small."torch-vs-ort-cpu".fp32.depth]\nmax_intervals = 0.2', "may only tighten"),
    ('[cases.small."torch-vs-ort-cpu".fp32.photometric_confidence]\nagreement = 0.99', "may only tighten"),
    ('[cases.small."torch-vs-trt".fp32.depth]\nmax_intervals = 0.01', "overrides a gate that does not exist"),
    ('[cases.small."torch-vs-ort-cpu".fp32.depth]\nmax_wobble = 0.01', "unknown metric"),
    ('[cases.small.stages."ort-cpu".fp32]\nwarped = 1e-3', "may only tighten"),
    ('[cases.small.stages."ort-cpu".fp64]\nwarped = 1e-5', "known precision"),
    ('[cases.small.stages."ort-cpu".fp32]\nwarped = 0', "positive"),
])
def test_an_override_that_loosens_or_points_nowhere_is_refused(tmp_path, override, problem):
    with pytest.raises(ConfigError, match=problem):
        Tolerances.load(_write(tmp_path, BASE + override))


def test_stage_limits_per_case_and_backend_and_whether_they_count(tmp_path):
    tol = Tolerances.load(_write(tmp_path, BASE + """
[cases.small.stages."ort-cpu".fp32]
ref_feature = 1e-5
depth = 3e-3
"""))
    assert tol.stage_limits("ort-cpu", "fp32", "small") == {"default": 1e-4, "ref_feature": 1e-5, "depth": 3e-3}
    assert tol.stage_limits("ort-cuda", "fp32", "small") == {"default": 1e-4}
    assert tol.stages_measured("ort-cpu", "fp32", "small")
    assert not tol.stages_measured("ort-cpu", "fp32", "seed") and not tol.stages_measured("ort-cuda", "fp32", "small")


def test_the_committed_overrides_never_loosen_a_shared_gate(real, raw_table):
    for case, entries in raw_table.get("cases", {}).items():
        for key, precisions in entries.items():
            if key == "stages":
                for stages in precisions.values():
                    for precision, limits in stages.items():
                        assert all(v <= raw_table["stages"][precision] for s, v in limits.items() if s != "depth")
                continue
            reference, _, candidate = key.partition("-vs-")
            for precision, outputs in precisions.items():
                for output in outputs:
                    shared = raw_table[f"{reference}-vs-{family(candidate)}"][precision][output]
                    merged = real.lookup(f"{reference}-fp32", candidate, precision, (output,), case=case)[output]
                    for metric, value in shared.items():
                        tighter = merged[metric] >= value if metric == "agreement" else merged[metric] <= value
                        assert tighter, (case, key, precision, output, metric)
