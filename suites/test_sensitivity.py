"""The gate catches conversion bugs: every mutation of the catalogue (harness/mutate.py) injected
into the small-case graphs must fail at least one check that counts (parity gate, per-stage
errors, precision audit, golden ONNX Runtime outputs), FP32 bugs with at least 3x margin; every
benign rewrite must pass them all. ``python -m harness mutate`` prints the same as a table.

Golden outputs come from ``--harness-golden DIR`` when given, else they are baselined at the start
of the session from the unmutated graphs (what a re-baseline does)."""

from __future__ import annotations

import pytest
import torch

from harness.mutate import CATALOGUE, mutations
from harness.sensitivity import CHECKS, PRECISIONS, Sensitivity, catch_table

CASE = "small"  # 3 views 128x160 D=48: the mutation suite's case in every profile
FP32_MARGIN = 3.0
PARAMS = [(m.name, p) for p in PRECISIONS for m in mutations(p)]


@pytest.fixture(scope="session")
def sensitivity(chain, tolerances, harness_options):
    with Sensitivity(chain, tolerances, CASE, golden_dir=harness_options.golden) as sens:
        if sens.own_golden:
            sens.baseline_golden()
        yield sens


@pytest.mark.parametrize(("name", "precision"), PARAMS, ids=[f"{p}-{n}" for n, p in PARAMS])
def test_the_gate_fails_each_bug_and_passes_each_benign_rewrite(sensitivity, name, precision):
    mutation = CATALOGUE[name]
    outcome = sensitivity.run(mutation, precision)
    table = catch_table([outcome])
    assert not outcome.error, outcome.error
    if mutation.benign:
        assert not outcome.caught(CHECKS), f"false alarm on a benign rewrite ({mutation.doc})\n{table}"
        return
    assert outcome.caught(CHECKS), f"bug not caught: {mutation.doc}\n{table}"
    if precision == "fp32":
        assert outcome.margin(CHECKS) >= FP32_MARGIN, f"caught with less than {FP32_MARGIN}x margin\n{table}"


@pytest.mark.parametrize("precision", PRECISIONS)
def test_a_probe_build_computes_the_production_graphs_outputs(sensitivity, precision):
    """The suite reads outputs and stages from one run of the mutated probe build: that is only
    the production graph's verdict if the probe build's outputs are the production graph's."""
    production = sensitivity.chain.onnx(CASE, "precomputed", "torchscript", "simplified", precision)
    runner = sensitivity.chain.onnx_file_runner(production.path)
    try:
        expected = runner.infer(sensitivity.feed)
    finally:
        runner.close()
    probed = sensitivity.run_graph(sensitivity.graph("simplified", precision, probes=True), f"probe-{precision}",
                              every_output=True)
    for name, value in expected.items():
        assert torch.equal(probed[name], value), name
