"""Around a torch compile (torch.compile, torch.export + AOTInductor): where Inductor caches it,
and keeping what it says off the console.

Shared by the runners that compile the model (``torch_runner``, ``aoti_runner``); imports nothing
of the harness, so either can use it without an import cycle.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

#: Inductor's own setting for its on-disk caches (FX graphs, kernels, autotuning; Triton's cache
#: lies under it unless $TRITON_CACHE_DIR says otherwise).
INDUCTOR_CACHE_ENV = "TORCHINDUCTOR_CACHE_DIR"


def inductor_cache_dir(cache_dir: str | Path | None) -> Path | None:
    """The folder Inductor caches into under the harness's artifact cache ``cache_dir`` (None:
    none given, Inductor keeps its default). A ``$TORCHINDUCTOR_CACHE_DIR`` the user set wins;
    Inductor sets the variable to its default itself at its first compile, which does not count."""
    if cache_dir is None or _user_set_inductor_cache():
        return None
    return Path(cache_dir) / "inductor"


def _user_set_inductor_cache() -> bool:
    current = os.environ.get(INDUCTOR_CACHE_ENV)
    if not current:
        return False
    try:
        from torch._inductor.runtime.cache_dir_utils import default_cache_dir
    except ImportError:  # a torch without Inductor: whatever is set is the user's
        return True
    return os.path.abspath(current) != os.path.abspath(default_cache_dir())


@contextlib.contextmanager
def inductor_cache(folder: Path | None) -> Iterator[None]:
    """Inductor caches into ``folder`` for the block (nothing changes when None). Inductor reads
    the variable when it compiles; what it set it to is put back after, so no other code of the
    process sees the harness's folder."""
    if folder is None:
        yield
        return
    saved = os.environ.get(INDUCTOR_CACHE_ENV)
    folder.mkdir(parents=True, exist_ok=True)
    os.environ[INDUCTOR_CACHE_ENV] = str(folder.resolve())
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop(INDUCTOR_CACHE_ENV, None)
        else:
            os.environ[INDUCTOR_CACHE_ENV] = saved
