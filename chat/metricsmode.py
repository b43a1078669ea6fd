"""Where a process keeps its metrics: in its own memory, or in files every process of the server shares.

prometheus-client's multi-process mode (``PROMETHEUS_MULTIPROC_DIR``) keeps
each process's figures in memory-mapped files of one directory, so that any
process can answer ``/metrics`` with the whole server's figures. It has to be
chosen before the first metric is made, which is why ``chat.metrics`` calls
``activate(decide(...))`` before it defines any.

How a process learns that it is one of several:

* ``KAIWA_METRICS_DIR`` (or the library's own ``PROMETHEUS_MULTIPROC_DIR``) is
  set: every process that has it (server workers, ``manage.py chatworker``)
  writes there. The operator empties the directory before the server starts
  (figures of a previous run would otherwise be added in).
* Otherwise, a process started by ``multiprocessing`` (``uvicorn --workers N``
  and ``--reload`` spawn their workers that way) is one of its parent's
  workers: the directory is ``<temp dir>/kaiwa-metrics-<parent pid>-<parent
  start time>``, so the workers of one server share it and a new server (a new
  supervisor) never inherits an old one's figures. Directories of supervisors
  that are gone are removed by the next server's workers.
* Otherwise (plain ``uvicorn`` with one process, tests): in memory.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import re
import shutil
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

ENV = "PROMETHEUS_MULTIPROC_DIR"
AUTO_PREFIX = "kaiwa-metrics-"
_AUTO_NAME = re.compile(re.escape(AUTO_PREFIX) + r"(\d+)(?:-(\d+))?\Z")
_LIVE_GAUGE_FILE = re.compile(r"gauge_live[a-z]+_(\d+)\.db\Z")


@dataclass(frozen=True)
class Mode:
    """``directory`` None: this process alone, in memory. ``source``: single, configured or workers."""

    directory: Path | None
    source: str

    @property
    def shared(self) -> bool:
        return self.directory is not None


def decide(configured: str | None, *, base: Path | None = None) -> Mode:
    """The mode of this process: a configured directory, uvicorn's workers' shared one, or memory."""
    if configured:
        return Mode(Path(configured), "configured")
    parent = multiprocessing.parent_process()
    if parent is None or parent.pid is None:
        return Mode(None, "single")
    return Mode(auto_directory(parent.pid, base=base), "workers")


def auto_directory(supervisor_pid: int, *, base: Path | None = None) -> Path:
    ticks = start_ticks(supervisor_pid)
    name = f"{AUTO_PREFIX}{supervisor_pid}" + ("" if ticks is None else f"-{ticks}")
    return (base or Path(tempfile.gettempdir())) / name


def start_ticks(pid: int) -> int | None:
    """When ``pid`` started (clock ticks since boot, Linux); None where /proc cannot tell."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (2nd field) may hold spaces and parentheses: count from the last ")".
    fields = raw.rpartition(")")[2].split()
    try:
        return int(fields[19])  # field 22 of proc(5), the 20th after the name
    except (IndexError, ValueError):
        return None


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


def ensure_private_directory(path: Path) -> None:
    """Create ``path`` (mode 0700) or check that an existing one is a real directory of this user."""
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = path.lstat()
    except OSError as exc:
        raise ImproperlyConfigured(
            f"The metrics directory {path} cannot be created ({exc}); set KAIWA_METRICS_DIR to a writable directory."
        ) from None
    if not stat.S_ISDIR(info.st_mode):
        raise ImproperlyConfigured(f"The metrics directory {path} is not a directory (a symlink?); remove it.")
    if hasattr(os, "getuid") and info.st_uid != os.getuid():
        raise ImproperlyConfigured(
            f"The metrics directory {path} belongs to another user; remove it or set KAIWA_METRICS_DIR."
        )


def sweep_stale_auto_directories(base: Path, keep: Path) -> None:
    """Remove this user's ``kaiwa-metrics-*`` directories whose supervisor is gone (best effort)."""
    with contextlib.suppress(OSError):
        for entry in base.iterdir():
            found = _AUTO_NAME.match(entry.name)
            if found is None or entry == keep:
                continue
            pid, ticks = int(found.group(1)), found.group(2)
            current = start_ticks(pid) if alive(pid) else None
            if alive(pid) and (ticks is None or current is None or int(ticks) == current):
                continue
            with contextlib.suppress(OSError):
                info = entry.lstat()
                if stat.S_ISDIR(info.st_mode) and (not hasattr(os, "getuid") or info.st_uid == os.getuid()):
                    shutil.rmtree(entry, ignore_errors=True)


def sweep_dead_processes(directory: Path) -> None:
    """Drop the live gauges (open connections, queues) of processes that died, so they stop counting."""
    from prometheus_client import multiprocess

    with contextlib.suppress(OSError):
        dead = {int(m.group(1)) for p in directory.iterdir() if (m := _LIVE_GAUGE_FILE.match(p.name))}
        for pid in dead:
            if not alive(pid):
                multiprocess.mark_process_dead(pid, str(directory))


def activate(mode: Mode) -> None:
    """Make every metric created from now on in this process follow ``mode``."""
    if mode.directory is None:
        return
    ensure_private_directory(mode.directory)
    if mode.source == "workers":
        sweep_stale_auto_directories(mode.directory.parent, keep=mode.directory)
    # The library reads the variable whenever it opens a process's file;
    # child processes (image workers) inherit it and write beside us.
    os.environ[ENV] = str(mode.directory)
    from prometheus_client import values

    if not getattr(values.ValueClass, "_multiprocess", False):
        values.ValueClass = values.MultiProcessValue()
