"""Writing files the way refmask promises: atomically, and never over a user's file unasked."""

from __future__ import annotations

import contextlib
import os
import secrets


def _temp_file(directory: str, base: str, where: str) -> tuple[int, str]:
    """Create a fresh file next to the target; mode 0o666 filtered by the umask."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    for _ in range(100):
        name = os.path.join(directory, f".{base}.{secrets.token_hex(6)}.tmp")
        try:
            return os.open(name, flags, 0o666), name
        except FileExistsError:
            continue
    raise FileExistsError(f"{where}: could not create a temporary file in {directory!r}")


def write_atomic(data: bytes, path, overwrite: bool, *, where: str = "to_png",
                 name: str = "path") -> None:
    """Write ``data`` to ``path`` through a temp file in the same directory.

    Readers see either no file / the old file, or the complete new one. Without
    ``overwrite`` an existing ``path`` is an error naming ``where`` and the argument ``name``,
    and the final step is ``os.link``, which fails if ``path`` appeared meanwhile.
    """
    target = os.fspath(path)
    exists = (f"{where}: {name} {target!r} already exists; pass overwrite=True "
              f"(--overwrite) to replace it")
    if not overwrite and os.path.lexists(target):
        raise FileExistsError(exists)
    directory = os.path.dirname(os.path.abspath(target))
    fd, temp = _temp_file(directory, os.path.basename(target), where)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        if overwrite:
            os.replace(temp, target)
            return
        try:
            os.link(temp, target)
        except FileExistsError:
            raise FileExistsError(exists) from None
        except OSError:  # no hard links on this file system: check, then rename
            if os.path.lexists(target):
                raise FileExistsError(exists) from None
            os.replace(temp, target)
            return
        os.unlink(temp)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise
