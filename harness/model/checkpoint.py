"""Loading and saving MVSNet checkpoints in the MVSNet_pytorch format.

MVSNet_pytorch saves ``{"epoch": e, "model": state_dict, "optimizer": ...}`` from a model wrapped
in ``nn.DataParallel``, so its keys start with ``module.``. Loading accepts that, a bare state
dict, and keys with or without the prefix. It always uses ``weights_only=True``: a checkpoint that
needs arbitrary unpickling could run code, and is refused without being executed.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import re
import warnings
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from harness.errors import CheckpointError, MissingFile, UnsafeCheckpoint
from harness.fileio import atomic_write_bytes
from harness.model.mvsnet import InverseMethod, MVSNet

_PREFIX = "module."
# RefineNet exists in the original but is broken there and unused at evaluation.
_IGNORED_PREFIXES = ("refine_network.",)


def _read(path: Path, map_location: str | torch.device) -> object:
    if not path.is_file():
        raise MissingFile(
            str(path), "checkpoint not found", observed="no such file", expected="a file written by torch.save",
            fix="pass the path of an MVSNet_pytorch checkpoint (e.g. model_000014.ckpt) or omit it to use the bundled weights",
        )
    _check_format(path)
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        text = str(exc)
        # quote only what was refused: torch's own text goes on to suggest allow-listing it
        blocked = re.findall(r"GLOBAL\s+([\w.]+)", text) or [
            line.strip() for line in text.splitlines() if "global" in line.lower() and "weights_only" not in line]
        if blocked:
            # weights_only refused a global: the file wants to build objects (or call functions)
            # while loading. Nothing has run at this point.
            raise UnsafeCheckpoint(
                str(path), "refused: loading it would unpickle arbitrary objects, which can run code",
                observed=f"it references {blocked[0][:120]}", expected="tensors, dicts, lists and numbers only (torch.load weights_only=True)",
                fix="re-save it as {'model': model.state_dict()} from a trusted environment",
            ) from None
        raise _unreadable(path, exc) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError, KeyError, IndexError,
            TypeError, AttributeError) as exc:  # torch's safe unpickler on garbage bytes
        raise _unreadable(path, exc) from None


#: How files written by torch.save begin: a zip archive (torch >= 1.6) or a pickle (protocol 2+).
TORCH_SAVE_MAGIC = (b"PK\x03\x04", b"\x80")


def _check_format(path: Path) -> None:
    """Refuse a file that torch.save cannot have written (a text file, an ONNX graph ...), naming
    what it is, before torch.load answers with an unpickler's error about something else."""
    with path.open("rb") as handle:
        head = handle.read(64)
    if not head or head.startswith(TORCH_SAVE_MAGIC):  # empty: a truncated download, torch.load says so
        return
    try:
        kind = f"text: {head.decode('utf-8').splitlines()[0][:40]!r}"
    except (UnicodeDecodeError, IndexError):
        kind = f"bytes {head[:8].hex(' ')}"
    raise CheckpointError(
        str(path), "not a torch checkpoint file", observed=f"it begins with {kind}",
        expected="a file written by torch.save (a zip archive or a pickle), e.g. MVSNet_pytorch's model_000014.ckpt",
        fix="pass the checkpoint file itself, or leave the option out for the bundled weights",
    )


def _unreadable(path: Path, exc: BaseException) -> CheckpointError:
    detail = next((line.strip() for line in str(exc).splitlines() if line.strip()), "")
    if len(detail) > 200:  # end on a word, not mid-sentence
        detail = detail[:200].rsplit(" ", 1)[0] + " ..."
    return CheckpointError(
        str(path), "not a readable torch checkpoint", observed=f"{type(exc).__name__}: {detail}",
        expected="a file written by torch.save", fix="check that the download or copy is complete",
    )


def extract_state_dict(obj: object, source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """The model's state dict from a loaded checkpoint object, ``module.`` prefixes removed."""
    if isinstance(obj, Mapping) and "model" in obj and isinstance(obj["model"], Mapping):
        obj = obj["model"]
    elif isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not obj:
        raise CheckpointError(
            source, "holds no state dict", observed=type(obj).__name__,
            expected="{'model': state_dict}, a bare state dict, or keys prefixed with 'module.'",
            fix="save it with torch.save({'model': model.state_dict()}, path)",
        )
    state: dict[str, torch.Tensor] = {}
    for key, value in obj.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise CheckpointError(
                source, "state dict entry is not a named tensor", observed=f"{key!r}: {type(value).__name__}",
                expected="str keys and torch.Tensor values", fix="save model.state_dict(), not the model object",
            )
        name = key[len(_PREFIX):] if key.startswith(_PREFIX) else key
        state[name] = value
    return state


def load_state_dict(model: torch.nn.Module, state: Mapping[str, torch.Tensor], source: str = "checkpoint") -> None:
    """Copy ``state`` into ``model``; every missing, unexpected or mis-shaped key is named."""
    ignored = sorted(k for k in state if k.startswith(_IGNORED_PREFIXES))
    if ignored:
        warnings.warn(
            f"{source}: ignoring {len(ignored)} RefineNet keys (refine=False is the evaluated model)",
            stacklevel=3,
        )
    state = {k: v for k, v in state.items() if not k.startswith(_IGNORED_PREFIXES)}
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    mismatched = sorted(
        f"{k} {tuple(state[k].shape)} vs {tuple(expected[k].shape)}"
        for k in set(state) & set(expected)
        if state[k].shape != expected[k].shape
    )
    if missing or unexpected or mismatched:
        parts = []
        if missing:
            parts.append(f"missing {_clip(missing)}")
        if unexpected:
            parts.append(f"unexpected {_clip(unexpected)}")
        if mismatched:
            parts.append(f"wrong shape {_clip(mismatched)}")
        raise CheckpointError(
            source, "keys do not match MVSNet (refine=False)", observed="; ".join(parts),
            expected="the state-dict keys of MVSNet_pytorch's MVSNet (feature.*, cost_regularization.*)",
            fix="check that the checkpoint is an MVSNet_pytorch MVSNet, not another network or a renamed copy",
        )
    model.load_state_dict(dict(state), strict=True)


def _clip(names: list[str], limit: int = 8) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" (+{len(names) - limit} more)" if len(names) > limit else "")


def load_checkpoint(
    path: str | os.PathLike[str],
    map_location: str | torch.device = "cpu",
    inverse: InverseMethod = "torch",
    align_corners: bool = True,
) -> MVSNet:
    """An MVSNet in eval mode with the checkpoint's weights.

    Raises:
        MissingFile: no file at ``path``.
        UnsafeCheckpoint: the file needs arbitrary unpickling (it was not executed).
        CheckpointError: unreadable file, or keys that do not match (named in the message).
    """
    path = Path(path)
    state = read_state_dict(path, map_location)
    model = MVSNet(inverse=inverse, align_corners=align_corners)
    load_state_dict(model, state, str(path))
    return model.to(map_location).eval()


def read_state_dict(path: str | os.PathLike[str], map_location: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """The checkpoint's state dict (``module.`` prefixes removed), read with ``weights_only=True``;
    for loading into a model other than the harness's own (``--model``) with ``load_state_dict``."""
    path = Path(path)
    return extract_state_dict(_read(path, map_location), str(path))


def save_checkpoint(
    model: MVSNet,
    path: str | os.PathLike[str],
    epoch: int = 0,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``model`` in the MVSNet_pytorch format (``module.`` keys), atomically."""
    state = {_PREFIX + k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    payload: dict[str, Any] = {"epoch": epoch, "model": state}
    if extra:
        payload.update(extra)
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    return atomic_write_bytes(Path(path), buffer.getvalue())


def state_dict_digest(model: torch.nn.Module) -> str:
    """sha256 over the model's tensors (names, dtypes, shapes, bytes): the weights' identity."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.float().numpy().tobytes())
    return digest.hexdigest()
