"""Atomic writes: a file appears complete or not at all (temp file in the same folder, then rename)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(path) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` (for a file or a folder); on success it is renamed to ``path``,
    on error removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        raise


def respect_umask(folder) -> None:
    """Give the files in ``folder`` the mode new files get here (``0666`` less the umask): writers that go through
    private temporary files (mode 0600) otherwise leave them unreadable to everyone else."""
    mask = os.umask(0)
    os.umask(mask)
    for file in Path(folder).rglob("*"):
        if file.is_file():
            file.chmod(0o666 & ~mask)


def write_text_atomic(path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)
