"""The model a model-neutral layer falls back to when its caller injects no spec: MVSNet.

Runners, ``harness.compare`` and the report take a ``ModelSpec``; callers that pass none (every
caller written before the seam) get MVSNet's, so they behave as before. This is the one place a
neutral layer reaches MVSNet, and it does so only when called: a caller that injects its own
spec never loads MVSNet's modules (tests/test_second_model.py checks that in a fresh process).
"""

from __future__ import annotations

from harness.modelspec import ModelSpec


def default_spec() -> ModelSpec:
    """MVSNet's spec (``harness.model.spec.MVSNET``), imported on first use."""
    from harness.model.spec import MVSNET

    return MVSNET


def resolve(spec: ModelSpec | None) -> ModelSpec:
    """``spec``, or the default when None."""
    return default_spec() if spec is None else spec


__all__ = ["default_spec", "resolve"]
