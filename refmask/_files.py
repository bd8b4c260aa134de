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
        except OSError as error:  # name the user's path, not the temporary file
            raise type(error)(f"{where}: cannot write {base!r} in {directory!r}: "
                              f"{error.strerror or error}") from None
    raise FileExistsError(f"{where}: could not create a temporary file in {directory!r}")


def write_atomic(data: bytes, path, overwrite: bool, *, where: str = "to_png",
                 name: str = "path") -> None:
    """Write ``data`` to ``path`` through a temp file in the same directory.

    Readers see either no file / the old file, or the complete new one. Without
    ``overwrite`` an existing ``path`` is an error naming ``where`` and the argument ``name``,
    and the final step is ``os.link``, which fails if ``path`` appeared meanwhile.
    """
    target = check_output_path(path, overwrite, where=where, name=name)
    exists = (f"{where}: {name} {target!r} already exists; pass overwrite=True "
              f"(--overwrite) to replace it")
    directory = os.path.dirname(os.path.abspath(target))
    fd, temp = _temp_file(directory, os.path.basename(target), where)
    try:
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
        except OSError as error:  # disk full, quota, file size limit: name the user's path
            raise type(error)(f"{where}: cannot write {name} {target!r}: "
                              f"{error.strerror or error}") from None
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


def check_output_path(path, overwrite: bool, *, where: str, name: str) -> str:
    """Refuse an output path that :func:`write_atomic` would fail on, before any work is done.

    Rules: ``path`` is a non-empty path that is not an existing directory; it does not exist
    unless ``overwrite``; its parent directory exists, is a directory, and can be written.
    Raises FileExistsError, FileNotFoundError, NotADirectoryError, IsADirectoryError or
    PermissionError, naming ``where`` and the argument ``name``.
    """
    try:
        target = os.fspath(path)
    except TypeError:
        raise TypeError(f"{where}: {name} must be a file path (str or os.PathLike), got "
                        f"{type(path).__name__}") from None
    if not isinstance(target, str) or not target:
        raise ValueError(f"{where}: {name} must be a non-empty file path, got {path!r}")
    if os.path.lexists(target) and not overwrite:
        raise FileExistsError(f"{where}: {name} {target!r} already exists; pass overwrite=True "
                              "(--overwrite) to replace it")
    if os.path.isdir(target):
        raise IsADirectoryError(f"{where}: {name} {target!r} is a directory, expected a file "
                                "path")
    parent = os.path.dirname(os.path.abspath(target))
    if not os.path.exists(parent):
        raise FileNotFoundError(f"{where}: {name} {target!r}: the directory {parent!r} does not "
                                "exist")
    if not os.path.isdir(parent):
        raise NotADirectoryError(f"{where}: {name} {target!r}: {parent!r} is not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise PermissionError(f"{where}: {name} {target!r}: the directory {parent!r} is not "
                              "writable")
    return target
