"""The user's own model code as the torch reference (``--model pkg.module:factory``).

``factory()`` must return an ``nn.Module`` with MVSNet's state-dict keys (e.g. MVSNet_pytorch's
``models.mvsnet.MVSNet``, possibly patched the source article's way to take the precomputed
inverse). Keyword arguments that are Python literals may follow the callable:
``models.mvsnet:MVSNet(refine=False)`` (MVSNet_pytorch's ``MVSNet()`` defaults to ``refine=True``,
whose RefineNet the published checkpoints do not hold). The checkpoint goes in through the harness's safe loader (``weights_only=True``; keys
checked by name). ``UserModel`` gives it the harness's call and output convention:

* ``forward`` with three parameters is called ``(imgs, proj_matrices, depth_values)``
  (MVSNet_pytorch); with four, by parameter name where the names are known (the harness's or the
  article's), else in the article's order ``(imgs, proj_matrices, inverse_proj_matrices,
  depth_values)``; the inverse is computed in data preparation (float64) when not fed;
* a dict output is read by name (``depth``/``out_depth``, ``photometric_confidence``/
  ``out_confidence``), a tuple as ``(depth, confidence)``.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import os
import sys
from pathlib import Path

import torch
from torch import nn

from harness.errors import InvalidArgument
from harness.model.checkpoint import load_state_dict, read_state_dict
from harness.model.geometry import inverse_precomputed
from harness.model.io import ALIASES, OUTPUT_ROLES, POSITIONAL

_ROLE_OF = {alias: role for role, names in ALIASES.items() for alias in names}


#: How a factory that needs arguments is named: MVSNet_pytorch's code, evaluated without RefineNet.
EXAMPLE = "models.mvsnet:MVSNet(refine=False)"


def parse_spec(spec: str) -> tuple[str, str, dict[str, object]]:
    """``pkg.module:callable`` or ``pkg.module:callable(key=literal, ...)`` -> (module, callable,
    keyword arguments); the arguments are Python literals (``ast.literal_eval``), never code."""
    module_name, sep, rest = spec.partition(":")
    attr, paren, call = rest.partition("(")
    attr = attr.strip()
    if not sep or not module_name.strip() or not attr:
        raise InvalidArgument("--model", "not MODULE:CALLABLE", observed=spec, expected=f"e.g. {EXAMPLE}",
                              fix="name the module (dotted, importable from here) and the factory after ':'")
    if not paren:
        return module_name.strip(), attr, {}
    try:
        node = ast.parse(f"f({call}", mode="eval").body
    except SyntaxError:
        node = None
    if (not isinstance(node, ast.Call) or node.args
            or any(k.arg is None for k in node.keywords)):  # positional or **kwargs: the names would be guessed
        raise InvalidArgument("--model", "the factory's arguments are not keyword=literal pairs",
                              observed=f"({call}", expected=f"keyword arguments with Python literal values, e.g. {EXAMPLE}",
                              fix="name every argument (refine=False) and quote the spec for the shell")
    kwargs: dict[str, object] = {}
    for keyword in node.keywords:
        try:
            kwargs[str(keyword.arg)] = ast.literal_eval(keyword.value)
        except ValueError:
            raise InvalidArgument("--model", "a factory argument is not a Python literal",
                                  observed=f"{keyword.arg}={ast.unparse(keyword.value)}",
                                  expected="a number, string, True/False/None, or a tuple/list/dict of them",
                                  fix="pass literals only, or write a factory function without arguments") from None
    return module_name.strip(), attr, kwargs


def import_factory(spec: str) -> object:
    """``pkg.module:callable`` -> the callable (any ``(...)`` arguments are ``parse_spec``'s); the
    working directory is importable (as for ``python -m``), so a checkout of MVSNet_pytorch is
    used from its root."""
    module_name, attr, _ = parse_spec(spec)
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise InvalidArgument("--model", "cannot import the module", observed=f"{module_name}: {exc}",
                              expected="a module importable from the working directory or PYTHONPATH",
                              fix="run from the repository root of your model code, or set PYTHONPATH") from None
    target: object = module
    for part in attr.split("."):
        if not hasattr(target, part):
            raise InvalidArgument("--model", "no such callable in the module", observed=f"{module_name} has no {attr}",
                                  expected="a class or function returning the network", fix="check the name after ':'")
        target = getattr(target, part)
    if not callable(target):
        raise InvalidArgument("--model", "not callable", observed=f"{spec} is a {type(target).__name__}",
                              expected="a class or factory function", fix=f"point at the class (e.g. {EXAMPLE})")
    return target


class UserModel(nn.Module):
    """The user's network behind the harness's ``forward(imgs, proj, depth, inverse=None) -> dict``."""

    def __init__(self, network: nn.Module, spec: str) -> None:
        super().__init__()
        self.network = network
        self.spec = spec
        params = [p for p in inspect.signature(network.forward).parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty]
        if len(params) not in POSITIONAL:
            raise InvalidArgument(f"--model {spec}", "forward() does not take MVSNet's inputs",
                                  observed=f"{len(params)} required parameters ({', '.join(p.name for p in params)})",
                                  expected="forward(imgs, proj_matrices, depth_values) or the article's four inputs",
                                  fix="wrap your network so that forward takes those tensors")
        by_name = [_ROLE_OF.get(p.name) for p in params]
        if all(by_name) and len(set(by_name)) == len(by_name):
            self.order = tuple(str(r) for r in by_name)
        else:
            self.order = POSITIONAL[len(params)]

    def forward(self, imgs: torch.Tensor, proj_matrices: torch.Tensor, depth_values: torch.Tensor,
                inverse_proj_matrices: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        if "inverse_proj_matrices" in self.order and inverse_proj_matrices is None:
            inverse_proj_matrices = inverse_precomputed(proj_matrices).to(proj_matrices.device)
        given = {"imgs": imgs, "proj_matrices": proj_matrices, "depth_values": depth_values,
                 "inverse_proj_matrices": inverse_proj_matrices}
        try:
            out = self.network(*(given[role] for role in self.order))
        except Exception as exc:  # noqa: BLE001 - the user's forward: reported with its call, not as a traceback
            raise InvalidArgument(f"--model {self.spec}", "forward() raised",
                                  observed=f"{type(exc).__name__}: {str(exc)[:300]}",
                                  expected=f"forward({', '.join(self.order)}) running on MVSNet's inputs",
                                  fix="fix the model code (it is called with the harness's tensors in that order)") from exc
        if isinstance(out, dict):
            found = {_ROLE_OF[k]: v for k, v in out.items() if k in _ROLE_OF and _ROLE_OF[k] in OUTPUT_ROLES}
            missing = [r for r in OUTPUT_ROLES if r not in found]
            if missing:
                raise InvalidArgument(f"--model {self.spec}", "output dict lacks MVSNet's outputs",
                                      observed=f"keys {sorted(out)}", expected="depth and photometric_confidence (or out_depth, "
                                      "out_confidence)", fix="return those keys")
            return {r: found[r] for r in OUTPUT_ROLES}
        if isinstance(out, (tuple, list)) and len(out) >= 2:
            return {"depth": out[0], "photometric_confidence": out[1]}
        raise InvalidArgument(f"--model {self.spec}", "unrecognised output", observed=type(out).__name__,
                              expected="a dict with depth and photometric_confidence, or a (depth, confidence) tuple",
                              fix="return one of those")


def load_user_model(spec: str, weights: str | Path) -> UserModel:
    """Import ``spec``, build the network, load ``weights`` with the safe loader, eval mode."""
    factory = import_factory(spec)
    _, attr, kwargs = parse_spec(spec)
    call = f"{attr}({', '.join(f'{k}={v!r}' for k, v in kwargs.items())})"
    try:
        network = factory(**kwargs)  # type: ignore[operator]
    except Exception as exc:  # noqa: BLE001 - the user's constructor: report what it raised
        raise InvalidArgument("--model", "the factory raised", observed=f"{call}: {type(exc).__name__}: {exc}",
                              expected="a factory callable with the keyword arguments given (none by default)",
                              fix=f"pass its arguments as keyword=literal ({EXAMPLE}) or wrap it: "
                              "def make(): return MVSNet(refine=False)") from None
    if not isinstance(network, nn.Module):
        raise InvalidArgument("--model", "the factory did not return a torch module", observed=type(network).__name__,
                              expected="an nn.Module", fix="return the network instance")
    state = read_state_dict(weights)
    refine = [k for k in network.state_dict() if k.startswith("refine_network.")]
    if refine:  # checkpoint.load_state_dict drops refine_network.*: they would be reported missing
        held = sum(k.startswith("refine_network.") for k in state)
        raise InvalidArgument(f"--model {spec}", "the network has a RefineNet, which the harness does not evaluate",
                              observed=f"{len(refine)} refine_network.* weights in {call}; {held} in {Path(weights).name}",
                              expected="MVSNet without RefineNet, as MVSNet_pytorch evaluates it and the gate's "
                              "reference computes it (its MVSNet() defaults to refine=True)",
                              fix=f"pass --model '{spec.split('(')[0].strip()}(refine=False)' (quoted for the shell)")
    load_state_dict(network, state, str(weights))
    return UserModel(network.eval(), spec).eval()
