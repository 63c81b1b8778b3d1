"""Atomic output files: written under a temporary name, renamed only when complete.

Every file caloforge writes (shower files, checkpoints, ONNX exports and their contracts)
goes through :func:`atomic_output`, which

- refuses an output that cannot be a file (a folder, or a path below a file) and an output
  that the running command read as an input (``generate RUN -o RUN/checkpoint.pt``), in one
  :class:`~caloforge.errors.CaloforgeError` line, before any work is done;
- writes to ``.NAME.caloforge-tmp-HOST-PID`` beside the target and renames it onto the target only
  when the block exits without an exception, so a reader never sees half a file;
- removes the temporary (and the folders made for it) on an exception, on SIGTERM, and on
  Ctrl-C in a ``caloforge`` command (handlers are installed while a temporary is open,
  where the process has none of its own; the process then still dies of the signal);
- removes, before writing, the temporaries that dead processes of this machine left in the
  same folder (SIGKILL and power cuts cannot be caught).
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

from caloforge.errors import CaloforgeError

__all__ = ["atomic_output", "check_output_path", "record_input", "remove_stale_temporaries",
           "temporary_path"]

# .NAME.caloforge-tmp-HOST-PID (HOST has no "-"), and the older .NAME.tmp-PID of caloforge's
# own outputs (shower files, checkpoints, exports)
_TMP = re.compile(r"^\.(?P<name>.+)\.caloforge-tmp-(?P<host>[A-Za-z0-9_.]+)-(?P<pid>\d+)$")
_OLD_TMP = re.compile(r"^\.(?P<name>.+\.(?:h5|hdf5|pt|onnx|json))\.tmp-(?P<pid>\d+)$")
_live: dict[Path, list[Path]] = {}  # temporary -> the folders made for it
_lock = threading.Lock()
_previous: dict[int, object] = {}  # signal -> the handler we replaced
_INPUTS_KEY = "caloforge.inputs"
# A run's checkpoint (train/checkpoint.py writes it); only its writer may replace it.
_RUN_CHECKPOINT = "checkpoint.pt"


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9_.]", "_", socket.gethostname()) or "localhost"  # no "-"


def temporary_path(path: str | Path) -> Path:
    """The temporary name :func:`atomic_output` writes ``path`` under:
    ``.NAME.caloforge-tmp-HOST-PID`` in the same folder (same file system, so the rename is
    atomic)."""
    path = Path(path)
    return path.with_name(f".{path.name}.caloforge-tmp-{_host()}-{os.getpid()}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    except OSError:
        return True
    return True


def remove_stale_temporaries(folder: str | Path) -> list[Path]:
    """Delete the temporaries (``.NAME.caloforge-tmp-HOST-PID``, and the older
    ``.NAME.tmp-PID`` of ``.h5``, ``.hdf5``, ``.pt``, ``.onnx`` and ``.json`` outputs) that
    processes of this machine which are no longer running left in ``folder``.

    Temporaries of live processes and of other machines (a shared file system) are kept.

    Returns:
        The files removed.
    """
    removed = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    host, me = _host(), os.getpid()
    for entry in entries:
        match = _TMP.match(entry.name) or _OLD_TMP.match(entry.name)
        if match is None or not entry.is_file(follow_symlinks=False):
            continue
        pid = int(match["pid"])
        other_host = match.re is _TMP and match["host"] != host
        if other_host or pid == me or _alive(pid):
            continue
        with contextlib.suppress(OSError):
            os.unlink(entry.path)
            removed.append(Path(entry.path))
    return removed


def _on_signal(signum, frame):  # pragma: no cover - exercised in subprocess tests
    for tmp, created in list(_live.items()):
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        _remove_folders(created)
    if signum == signal.SIGINT:
        with contextlib.suppress(OSError, ValueError):
            print("aborted", file=sys.stderr, flush=True)
    # Then die of the signal as if no handler were installed. (Raising an exception here
    # instead, as Python's own Ctrl-C handler does, is lost when the signal arrives inside a
    # callback whose exceptions Python ignores, such as the weakref callbacks h5py runs all
    # the time, and the process carries on writing.)
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


def _in_command() -> bool:
    try:
        import click
    except ImportError:  # pragma: no cover - click is a dependency
        return False
    return click.get_current_context(silent=True) is not None


def _register(tmp: Path, created: list[Path]) -> None:
    """Track a temporary; with the first one, take over SIGTERM where the process has the
    default (death) for it, and Ctrl-C inside a ``caloforge`` command (a library user's
    Ctrl-C, in a notebook say, stays a KeyboardInterrupt)."""
    with _lock:
        if not _live and threading.current_thread() is threading.main_thread():
            wanted = {signal.SIGTERM: (signal.SIG_DFL, None)}
            if _in_command():
                wanted[signal.SIGINT] = (signal.default_int_handler,)
            for signum, defaults in wanted.items():
                with contextlib.suppress(ValueError, OSError):
                    current = signal.getsignal(signum)
                    if current in defaults:
                        signal.signal(signum, _on_signal)
                        _previous[signum] = current
        _live[tmp] = created


def _unregister(tmp: Path) -> None:
    with _lock:
        _live.pop(tmp, None)
        if not _live and threading.current_thread() is threading.main_thread():
            for signum, handler in list(_previous.items()):
                with contextlib.suppress(ValueError, OSError):
                    if signal.getsignal(signum) is _on_signal:
                        signal.signal(signum, handler if handler is not None
                                      else signal.SIG_DFL)
                del _previous[signum]


def _inputs() -> set[str] | None:
    """The inputs recorded by the running ``caloforge`` command, or ``None`` outside one
    (library use: no command, nothing to protect)."""
    try:
        import click
    except ImportError:  # pragma: no cover - click is a dependency
        return None
    ctx = click.get_current_context(silent=True)
    if ctx is None:
        return None
    return ctx.find_root().meta.setdefault(_INPUTS_KEY, set())


def _key(path: str | Path) -> str:
    return os.path.realpath(os.path.abspath(path))


def record_input(path: str | Path) -> None:
    """Note that the running command reads ``path``, so that no output of the same command
    replaces it. Outside a ``caloforge`` command this does nothing."""
    inputs = _inputs()
    if inputs is not None:
        inputs.add(_key(path))


def check_output_path(path: str | Path, kind: str = "file",
                      replace_checkpoint: bool = False) -> Path:
    """Check that ``path`` can be written as a ``kind`` (``"file"`` or ``"folder"``).

    Args:
        path: the output.
        kind: ``"file"`` or ``"folder"``.
        replace_checkpoint: allow replacing a run's ``checkpoint.pt`` (only the checkpoint
            writer does).

    Raises:
        CaloforgeError: the path is a folder (for a file) or a file (for a folder); a part
            of the path above it is a file; it is a run's checkpoint; or the running command
            reads it as an input.
    """
    path = Path(path)
    if str(path) in ("", "."):
        if kind == "file":
            raise CaloforgeError("no output file name given")
        return path
    for parent in path.parents:
        if parent.exists() and not parent.is_dir():
            raise CaloforgeError(f"cannot write {path}: {parent} is a file, not a folder")
    if kind == "file" and path.is_dir():
        raise CaloforgeError(f"cannot write {path}: it is a folder; give a file name")
    if kind == "file" and path.exists() and not path.is_file():
        # a device, a pipe or a socket: the atomic rename would replace it with a file
        raise CaloforgeError(f"cannot write {path}: it is not a regular file")
    if kind == "folder" and path.exists() and not path.is_dir():
        raise CaloforgeError(f"cannot write into {path}: it is a file, not a folder")
    if kind == "file" and not replace_checkpoint and path.name == _RUN_CHECKPOINT \
            and path.is_file():
        raise CaloforgeError(f"refusing to overwrite {path}: it is a training run's "
                             "checkpoint; choose another output name")
    inputs = _inputs() or set()
    if kind == "file" and _key(path) in inputs:
        raise CaloforgeError(
            f"refusing to overwrite {path}: it is an input of this command; choose another "
            "output name"
        )
    if kind == "folder" and inputs:
        target = _key(path)
        if target in inputs:
            raise CaloforgeError(f"cannot write into {path}: it is an input of this command")
    return path


@contextlib.contextmanager
def atomic_output(path: str | Path, *, check: bool = True,
                  replace_checkpoint: bool = False) -> Iterator[Path]:
    """Write a file atomically: yields the temporary path to write to.

    On normal exit the temporary replaces ``path``; on an exception (Ctrl-C included) or
    SIGTERM it is deleted, and so are the folders this call created for it.

    Args:
        path: the final file.
        check: refuse, before anything is written, an output that is a folder, lies below a
            file, is a run's checkpoint or an input of the running command (see
            :func:`check_output_path`).
        replace_checkpoint: allow replacing a run's ``checkpoint.pt`` (only the checkpoint
            writer does).

    Raises:
        CaloforgeError: see :func:`check_output_path`; a folder that cannot be created.
    """
    path = Path(path)
    if check:
        check_output_path(path, replace_checkpoint=replace_checkpoint)
    created: list[Path] = []
    parent = path.parent
    missing = [p for p in (parent, *parent.parents) if not p.exists()]
    try:
        for folder in reversed(missing):
            folder.mkdir()
            created.append(folder)
    except FileExistsError:
        pass  # made meanwhile by someone else
    except OSError as err:
        _remove_folders(created)
        raise CaloforgeError(f"cannot create folder {parent}: {err.strerror or err}") from None
    remove_stale_temporaries(parent)
    tmp = temporary_path(path)
    _register(tmp, created)
    ok = False
    try:
        yield tmp
        os.replace(tmp, path)
        ok = True
    finally:
        _unregister(tmp)
        if not ok:
            with contextlib.suppress(OSError):
                tmp.unlink()
            _remove_folders(created)


def _remove_folders(created: list[Path]) -> None:
    """Remove the folders we created (innermost first) if they are still empty."""
    for folder in reversed(created):
        with contextlib.suppress(OSError):
            folder.rmdir()
