"""Files written whole: filled under a temporary name next to their place, then moved there in
one step, so a reader (another task, process or node sharing the directory) sees the old file or
the whole new one, never half of one."""

from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path


class StagedFile:
    """A file filled at :attr:`temp` and moved to :attr:`path` by :meth:`commit`. As a context it
    creates ``path``'s directory and, on the way out, removes a temporary file not committed, so a
    write that fails or is abandoned leaves ``path`` as it was."""

    def __init__(self, path: Path):
        self.path = Path(path)
        # Named per process and thread: concurrent writers of one path never share a file.
        self.temp = self.path.with_name(f".{self.path.name}.{os.getpid()}.{threading.get_ident()}.tmp")

    def __enter__(self) -> StagedFile:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        return self

    def commit(self) -> None:
        self.temp.replace(self.path)

    def __exit__(self, *_) -> None:
        with contextlib.suppress(OSError):
            self.temp.unlink()


def atomic_write(path: Path, data: bytes | str) -> None:
    """Writes ``data`` (text as UTF-8) as the whole new content of ``path``."""
    with StagedFile(path) as staged:
        staged.temp.write_bytes(data.encode() if isinstance(data, str) else data)
        staged.commit()
