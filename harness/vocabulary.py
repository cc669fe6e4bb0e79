"""The names the options of both fronts list, importable without torch.

``python -m harness --help`` (and every ``<command> --help``) builds its parser from these, so it
answers without importing torch, ONNX or the chain (seconds of start-up). Each tuple copies the
names of the table that owns them; tests/test_options.py checks every copy against its owner
(``harness.chain.OPTION_NAMES``: the cases, workarounds and exporters), so a case or workaround
added to its owner without its name here fails there. The backends are not copied (a backend is
one module): the help names ``doctor``, which lists them.
The commands themselves check values against the owners' tables, never against these copies.

Imports only harness.options (which imports nothing of the harness).
"""

from __future__ import annotations

from harness.options import Elsewhere

#: ``harness.data.cases.CASES``: the input cases (shape + data).
CASES = ("small", "seed", "dtu")
#: The backends: the registry's (harness.backends.registry) modules import torch, and no other
#: module names a backend (tests/test_architecture.py), so the parser points to doctor's list.
BACKENDS = Elsewhere("the backends python -m harness doctor lists")
#: ``harness.convert.workarounds.EXPORTABLE``: the torch.inverse workarounds a graph is exported with.
WORKAROUNDS = ("precomputed", "closed_form", "custom_op")
#: ``harness.convert.onnx_export.EXPORTERS``.
EXPORTERS = ("torchscript", "dynamo")
#: The ONNX graphs a leg runs (``harness.chain.VARIANTS``: declared here).
VARIANTS = ("raw", "simplified")
#: ``harness.timing.PROFILES``: timing (and, for pytest, case) profiles.
PROFILES = ("full", "quick")
#: The backends ``check`` runs a user's ONNX graph on (``harness.check.ONNX_BACKENDS``: declared here).
CHECK_BACKENDS = ("ort-cpu", "ort-cuda", "trt-fp32")
#: The checks ``mutate`` can count in its verdict (``harness.sensitivity.CHECKS``: declared here).
MUTATION_CHECKS = ("outputs", "stages", "precision", "golden")

#: ``harness.data.families.FAMILIES``: the synthetic scene families (train: classic, wide; accuracy: all).
FAMILIES = ("classic", "wide", "independent")

#: What the comma-list options may name, by vocabulary key (``harness.options.Option.names``).
OPTION_NAMES: dict[str, tuple[str, ...] | Elsewhere] = {"cases": CASES, "backends": BACKENDS, "workarounds": WORKAROUNDS,
                                            "exporters": EXPORTERS, "variants": VARIANTS, "profile": PROFILES,
                                            "families": FAMILIES}
