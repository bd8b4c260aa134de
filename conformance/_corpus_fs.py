"""The file-system side of golden corpora: reading files that may be hostile, and replacing a
corpus so that a crash at any point leaves either the old or the new complete corpus.

Reading (docs/spec.md section 4.2, rule ``corpus-files``):

* only regular files are read: ``lstat`` first, then ``open(O_NOFOLLOW | O_NONBLOCK)`` and
  ``fstat`` on the same inode, so a symlink (e.g. to ``/dev/zero``), a FIFO, a device or a
  directory is refused by name, and nothing can block;
* a file larger than its bound is refused before a byte is read: the manifest's bound is
  ``MAX_MANIFEST_BYTES``, a case file's bound is derived from its case (the members' bytes
  plus a fixed allowance per member for the npy and zip headers);
* the SHA-256 is computed while the file is read (one pass, no second copy);
* an ``.npz`` member is parsed by hand: stored (uncompressed) zip members only, each name
  exactly once, the npy header's dtype, shape and order compared with what the case requires
  and the member's length with the bytes that shape needs, all before any array exists;
  ``MemoryError`` while reading becomes a :class:`CorpusError`.

Writing (rule ``corpus-write``): :func:`replace_directory` runs the steps

    lock  ->  recover leftovers  ->  write DIR's sibling .NAME.TOKEN.tmp (files fsynced)
      ->  rename it to .NAME.TOKEN.new (complete)  ->  swap into DIR  ->  delete the old corpus

The swap is one ``renameat2(RENAME_EXCHANGE)`` on Linux (DIR always exists, holding the old
or the new corpus); elsewhere, or where the file system lacks it, it is two renames, and a
crash between them leaves DIR absent with the complete ``.new`` (or the ``.old``) next to it,
which the next command restores. Every temporary directory holds a marker file
(``.refmask-corpus-temp``), and recovery touches only directories named
``.NAME.<hex>.{tmp,new,old}`` that hold it. A lock file ``.NAME.lock`` next to DIR
(``fcntl.flock``) keeps two writers apart; the recovery done by readers takes it too, and
skips when a writer holds it.

Tests kill a writer at each step through the environment variable ``REFMASK_TEST_CRASH_AT``
(a step name of ``CRASH_POINTS``): the process then ends at once with ``os._exit(99)``, as a
``kill -9`` would end it.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import io
import json
import math
import os
import re
import secrets
import shutil
import stat
import zipfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import numpy as np

#: Largest manifest.json read (about 70,000 cases at the shipped corpus's ~900 bytes a case).
MAX_MANIFEST_BYTES = 64 << 20
#: Allowance per .npz member for its npy header and its two zip headers (bytes).
MEMBER_OVERHEAD_BYTES = 8192
#: Marker file inside every temporary directory a writer creates.
TEMP_MARKER = ".refmask-corpus-temp"
#: The steps at which ``REFMASK_TEST_CRASH_AT`` can end a writer (in order).
CRASH_POINTS = ("locked", "temp-created", "file-written", "manifest-written", "complete",
                "half-swapped", "swapped", "old-removed")
_CRASH_ENV = "REFMASK_TEST_CRASH_AT"
_NO_EXCHANGE_ENV = "REFMASK_TEST_NO_EXCHANGE"  # tests: take the two-rename fallback
_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


class CorpusFileError(ValueError):
    """A corpus file is refused; ``path`` names it, ``problem`` says why (the golden module
    turns it into its CorpusError)."""

    def __init__(self, path, problem: str):
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


# --- reading -----------------------------------------------------------------------------------

def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISLNK, "a symbolic link"), (stat.S_ISDIR, "a directory"),
                       (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a regular file"


def read_regular_file(path: Path, max_bytes: int, *, missing: str) -> tuple[bytearray, str]:
    """``(bytes, sha256 hex)`` of the regular file ``path`` of at most ``max_bytes`` bytes.

    missing: the problem reported when the file does not exist. Anything that is not a
    regular file, or is larger than ``max_bytes``, or changes while read, is refused
    (:class:`CorpusFileError`) before it is read.
    """
    path = Path(path)
    try:
        before = os.lstat(path)
    except FileNotFoundError:
        raise CorpusFileError(path, missing) from None
    except OSError as error:
        raise CorpusFileError(path, f"cannot be read ({error.strerror or error})") from None
    if not stat.S_ISREG(before.st_mode):
        raise CorpusFileError(path, f"is {_kind(before.st_mode)}, not a regular file (a corpus "
                              "holds regular files only)")
    if before.st_size > max_bytes:
        raise CorpusFileError(path, f"has {before.st_size} bytes, more than the {max_bytes} its "
                              "content can need; refused unread")
    flags = (os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
             | getattr(os, "O_BINARY", 0))
    try:
        fd = os.open(path, flags)
    except OSError as error:
        raise CorpusFileError(path, f"cannot be opened ({error.strerror or error})") from None
    try:
        now = os.fstat(fd)
        if not stat.S_ISREG(now.st_mode) or (now.st_dev, now.st_ino) != (before.st_dev,
                                                                          before.st_ino):
            raise CorpusFileError(path, "was replaced while being opened; refused")
        size = now.st_size
        if size > max_bytes:
            raise CorpusFileError(path, f"has {size} bytes, more than the {max_bytes} its "
                                  "content can need; refused unread")
        buffer = bytearray(size)
        view = memoryview(buffer)
        digest = hashlib.sha256()
        done = 0
        with io.FileIO(fd, "rb", closefd=False) as handle:
            while done < size:
                count = handle.readinto(view[done:min(size, done + (1 << 20))])
                if not count:
                    raise CorpusFileError(path, f"shrank while being read ({done} of {size} "
                                          "bytes)")
                digest.update(view[done:done + count])
                done += count
            if handle.read(1):
                raise CorpusFileError(path, "grew while being read; refused")
        view.release()
    except MemoryError:
        raise CorpusFileError(path, f"does not fit in memory ({before.st_size} bytes)") from None
    except OSError as error:
        raise CorpusFileError(path, f"cannot be read ({error.strerror or error})") from None
    finally:
        os.close(fd)
    return buffer, digest.hexdigest()


def strict_json(raw, path: Path):
    """Parse strict JSON (UTF-8; no NaN/Infinity, no number that overflows to inf; nesting
    within the interpreter's limit); anything else is a :class:`CorpusFileError`."""
    def no_constant(name):
        raise ValueError(f"non-standard JSON constant {name}")

    def finite(text):
        value = float(text)
        if not math.isfinite(value):
            raise ValueError(f"number {text[:40]} overflows to {value}")
        return value

    try:
        return json.loads(bytes(raw).decode("utf-8"), parse_constant=no_constant,
                          parse_float=finite)
    except UnicodeDecodeError as error:
        raise CorpusFileError(path, f"is not UTF-8 ({error})") from None
    except RecursionError:
        raise CorpusFileError(path, "nests JSON too deeply") from None
    except ValueError as error:
        raise CorpusFileError(path, f"is not valid JSON ({error}); truncated or corrupted?"
                              ) from None


def member_bound(expected: Mapping) -> int:
    """Largest size a case file can have: the members' data plus a fixed allowance each.

    expected: member name -> (dtype, shape), as the case requires.
    """
    data = sum(np.dtype(dtype).itemsize * math.prod(shape) for dtype, shape in expected.values())
    return data + (len(expected) + 1) * MEMBER_OVERHEAD_BYTES


def read_npz(path: Path, data, expected: Mapping) -> dict:
    """The members of a stored .npz as read-only arrays, in ``expected``'s order.

    data: the file's bytes (already hash-checked); expected: member name -> (dtype, shape).
    Every structural check happens before an array is allocated (module docstring).
    """
    def bad(problem):
        return CorpusFileError(path, problem)

    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as error:
        raise bad(f"is not a valid .npz archive ({error})") from None
    with archive:
        infos = archive.infolist()
        names = [info.filename for info in infos]
        wanted = [name + ".npy" for name in expected]
        if len(set(names)) != len(names):
            twice = sorted(n for n in set(names) if names.count(n) > 1)
            raise bad(f"lists a member twice ({twice})")
        missing = sorted(n[:-4] for n in set(wanted) - set(names))
        unknown = sorted(n.removesuffix(".npy") for n in set(names) - set(wanted))
        if missing or unknown:
            raise bad(f"members do not match the case: missing {missing}, unexpected {unknown}")
        by_name = {info.filename: info for info in infos}
        arrays = {}
        for name, (dtype, shape) in expected.items():
            info = by_name[name + ".npy"]
            if info.compress_type != zipfile.ZIP_STORED or info.flag_bits & 0x1:
                raise bad(f"member {name!r} is compressed or encrypted; a corpus stores members "
                          "uncompressed")
            need = np.dtype(dtype).itemsize * math.prod(shape)
            try:
                with archive.open(info) as member:
                    version = np.lib.format.read_magic(member)
                    if version == (1, 0):
                        header = np.lib.format.read_array_header_1_0(member)
                    elif version == (2, 0):
                        header = np.lib.format.read_array_header_2_0(member)
                    else:
                        raise ValueError(f"npy format version {version} is not used by corpora")
                    stored_shape, fortran, stored_dtype = header
                    if stored_dtype.hasobject:
                        raise bad(f"member {name!r} holds Python objects; refused unread "
                                  "(a corpus is read without pickle)")
                    if stored_dtype != dtype or tuple(stored_shape) != tuple(shape) or fortran:
                        raise bad(f"member {name!r} is {stored_dtype.str} {tuple(stored_shape)}"
                                  f"{' (Fortran order)' if fortran else ''}, expected "
                                  f"{np.dtype(dtype).str} {tuple(shape)}")
                    remaining = info.file_size - member.tell()
                    if remaining != need:
                        raise bad(f"member {name!r} holds {remaining} data bytes, its header "
                                  f"needs {need}")
                    raw = member.read(need)
            except CorpusFileError:
                raise
            except MemoryError:
                raise bad(f"member {name!r} does not fit in memory") from None
            except (zipfile.BadZipFile, ValueError, OSError, EOFError, SyntaxError) as error:
                raise bad(f"member {name!r} is not a valid npy array ({error})") from None
            array = np.frombuffer(raw, dtype=stored_dtype).reshape(shape)
            array.flags.writeable = False
            arrays[name] = array
    return arrays


def manifest_digest(manifest: Mapping) -> str:
    """SHA-256 of the manifest's canonical JSON without its "manifest_sha256" key: sorted keys,
    no spaces, ASCII, no NaN. It covers every field that steers verification (engine, spec
    and schema versions, each entry's id, file, sha256 and case)."""
    body = {key: value for key, value in manifest.items() if key != "manifest_sha256"}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                      allow_nan=False)
    return hashlib.sha256(text.encode("ascii")).hexdigest()


# --- writing -----------------------------------------------------------------------------------

def crash_point(step: str) -> None:
    """End the process at once when ``REFMASK_TEST_CRASH_AT`` names ``step`` (tests only)."""
    if os.environ.get(_CRASH_ENV) == step:
        os._exit(99)  # noqa: SLF001 - the point is to end without any cleanup


def fsync_directory(path: Path) -> None:
    """fsync a directory entry (POSIX; a no-op where directories cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_new_file(path: Path, data: bytes) -> None:
    """Create ``path`` (it must not exist) with ``data``, fsynced; an OSError (disk full, file
    size limit) names ``path``."""
    try:
        with open(path, "xb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as error:
        raise type(error)(f"cannot write {str(path)!r}: {error.strerror or error}") from None


def _temp_pattern(name: str):
    return re.compile(rf"\.{re.escape(name)}\.[0-9a-f]{{12}}\.(tmp|new|old)")


@contextlib.contextmanager
def writer_lock(target: Path, *, where: str, reader: bool = False) -> Iterator[bool]:
    """Hold the lock file ``.NAME.lock`` next to ``target``; yields True when held.

    A lock held by another process raises FileExistsError naming ``where`` -- or, for a
    ``reader`` (recovery before reading), yields False instead. The holder deletes the lock
    file when done; an acquirer checks that the file it locked is still the one at the path
    (else it retries), so deleting it never lets two holders in.
    """
    lock = target.parent / f".{target.name}.lock"
    try:
        import fcntl
    except ImportError:  # no flock (Windows): writers are not kept apart there
        yield True
        return
    for _ in range(100):
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o666)
        except OSError as error:
            raise type(error)(f"{where}: cannot create the lock file {str(lock)!r} next to the "
                              f"corpus {str(target)!r}: {error.strerror or error}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            if reader:
                yield False
                return
            raise FileExistsError(
                f"{where}: another refmask process is writing the corpus {str(target)!r} (lock "
                f"{str(lock)!r} is held); wait for it to finish") from None
        try:
            same = os.stat(lock, follow_symlinks=False).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # the holder before us deleted it: lock the new file instead
    else:
        raise FileExistsError(f"{where}: could not lock {str(lock)!r}")
    try:
        yield True
    finally:
        with contextlib.suppress(OSError):
            os.unlink(lock)
        os.close(fd)


def recover_leftovers(target: Path) -> list[str]:
    """:func:`recover` for a reader: under the lock if no writer holds it (else nothing, a
    writer is at work). Returns the notes for the user."""
    target = Path(target).absolute()
    if not target.parent.is_dir():
        return []
    pattern = _temp_pattern(target.name)
    stale_lock = (target.parent / f".{target.name}.lock").exists()
    if not stale_lock and not any(pattern.fullmatch(p.name) for p in target.parent.iterdir()):
        return []
    try:
        with writer_lock(target, where="recover", reader=True) as held:
            # held: no writer at work, so a lock file was left by a killed one (it goes
            # with this lock's release) and temporary directories are leftovers
            return recover(target) if held else []
    except OSError as error:
        return [f"leftovers of an interrupted golden generate next to {str(target)!r} could "
                f"not be recovered ({error.strerror or error})"]


def _is_our_temp(path: Path) -> bool:
    """A directory named like a writer's temporary (checked by the caller) that a writer made:
    a ``.tmp`` holds the marker file; a ``.new`` (complete) or ``.old`` (previous) corpus holds
    its manifest.json or the marker."""
    if not path.is_dir() or path.is_symlink():
        return False
    if (path / TEMP_MARKER).is_file():
        return True
    return not path.name.endswith(".tmp") and (path / "manifest.json").is_file()


def recover(target: Path) -> list[str]:
    """Repair what an interrupted writer left next to ``target`` (the lock must be held).

    If ``target`` is missing and a complete ``.new`` (else an ``.old``) exists, it is renamed
    to ``target``; every other temporary directory of ``target`` is removed. Returns one
    message per action, for the user.
    """
    parent = target.parent
    if not parent.is_dir():
        return []
    pattern = _temp_pattern(target.name)
    leftovers = sorted(p for p in parent.iterdir()
                       if pattern.fullmatch(p.name) and _is_our_temp(p))
    notes = []
    if not os.path.lexists(target):
        for role in ("new", "old"):
            found = [p for p in leftovers if p.name.endswith("." + role)]
            if found:
                os.rename(found[0], target)
                (target / TEMP_MARKER).unlink(missing_ok=True)
                fsync_directory(parent)
                leftovers.remove(found[0])
                state = "new complete" if role == "new" else "previous"
                notes.append(f"recovered {str(target)!r}: an interrupted golden generate had "
                             f"left it absent; restored the {state} corpus from "
                             f"{found[0].name!r}")
                break
    for path in leftovers:
        shutil.rmtree(path, ignore_errors=True)
        notes.append(f"removed {str(path)!r}, left by an interrupted golden generate")
    return notes


def _exchange(a: Path, b: Path) -> bool:
    """Atomically exchange two paths (Linux renameat2); False where unsupported."""
    if os.environ.get(_NO_EXCHANGE_ENV):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p,
                          ctypes.c_uint]
    result = renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    if result == 0:
        return True
    error = ctypes.get_errno()
    if error in (22, 38, 95):  # EINVAL, ENOSYS, EOPNOTSUPP: not supported here
        return False
    raise OSError(error, os.strerror(error), str(b))


def replace_directory(target: Path, fill: Callable[[Path], None], *, where: str,
                      may_replace: Callable[[], None]) -> list[str]:
    """Build a directory with ``fill(temp)`` and make it ``target``, crash-safely.

    may_replace(): called under the lock before writing and again just before the swap; it
    raises when ``target`` may not be replaced. Returns the recovery notes of leftovers.
    """
    parent = target.absolute().parent
    target = parent / target.name
    parent.mkdir(parents=True, exist_ok=True)
    with writer_lock(target, where=where):
        crash_point("locked")
        notes = recover(target)
        may_replace()
        token = secrets.token_hex(6)
        temp = parent / f".{target.name}.{token}.tmp"
        complete = parent / f".{target.name}.{token}.new"
        old = parent / f".{target.name}.{token}.old"
        temp.mkdir()
        try:
            write_new_file(temp / TEMP_MARKER, b"refmask golden generate: temporary directory\n")
            crash_point("temp-created")
            fill(temp)
            (temp / TEMP_MARKER).unlink()  # a complete .new is recognised by its manifest
            fsync_directory(temp)
            os.rename(temp, complete)
            fsync_directory(parent)
            crash_point("complete")
            may_replace()
            if os.path.lexists(target):
                if _exchange(complete, target):
                    old = complete  # now holds the previous corpus
                else:
                    os.rename(target, old)
                    crash_point("half-swapped")
                    os.rename(complete, target)
            else:
                os.rename(complete, target)
            fsync_directory(parent)
            crash_point("swapped")
        except BaseException:
            for leftover in (temp, complete):
                if leftover.exists() and leftover != target:
                    shutil.rmtree(leftover, ignore_errors=True)
            raise
        if old.exists():
            shutil.rmtree(old)
        crash_point("old-removed")
    return notes
