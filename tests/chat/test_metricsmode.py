"""Where a process keeps its metrics: alone in memory, or in a directory shared by a server's workers."""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from chat import metricsmode

# A child that records one live gauge and one counter in multi-process mode, then exits.
_RECORD = """
from prometheus_client import Counter, Gauge
Gauge("kaiwa_test_open", "open", multiprocess_mode="livesum").set(3)
Counter("kaiwa_test_seen", "seen").inc(5)
"""


def _decide_in_child(base: str, out: multiprocessing.Queue) -> None:
    mode = metricsmode.decide(None, base=Path(base))
    out.put((str(mode.directory), mode.source, os.getppid()))


def _dead_pid() -> int:
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(proc.stdout)


def test_a_process_started_alone_keeps_its_metrics_in_memory() -> None:
    """The test process has no multiprocessing parent and no configured directory: in memory."""
    mode = metricsmode.decide(None)
    assert mode.directory is None
    assert mode.source == "single"
    assert not mode.shared


def test_a_configured_directory_wins() -> None:
    """KAIWA_METRICS_DIR (or PROMETHEUS_MULTIPROC_DIR) names the directory every process shares."""
    mode = metricsmode.decide("/srv/kaiwa-metrics")
    assert mode.directory == Path("/srv/kaiwa-metrics")
    assert mode.source == "configured"


def test_a_spawned_worker_uses_its_supervisors_directory(tmp_path: Path) -> None:
    """A process spawned by multiprocessing (as uvicorn --workers does) gets a directory named after its parent."""
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    child = ctx.Process(target=_decide_in_child, args=(str(tmp_path), out))
    child.start()
    directory, source, parent = out.get(timeout=30)
    child.join(timeout=30)
    assert source == "workers"
    assert parent == os.getpid()
    assert Path(directory) == metricsmode.auto_directory(os.getpid(), base=tmp_path)
    assert Path(directory).name.startswith(f"kaiwa-metrics-{os.getpid()}")


def test_start_ticks_tell_a_reused_pid_apart() -> None:
    """The supervisor's start time is part of the name: a later process with the same pid gets another directory."""
    ticks = metricsmode.start_ticks(os.getpid())
    if sys.platform.startswith("linux"):
        assert isinstance(ticks, int) and ticks > 0
        assert metricsmode.auto_directory(os.getpid()).name == f"kaiwa-metrics-{os.getpid()}-{ticks}"
    else:
        assert ticks is None
    assert metricsmode.start_ticks(_dead_pid()) is None


def test_stale_directories_of_gone_supervisors_are_removed(tmp_path: Path) -> None:
    """A new server's workers remove directories whose supervisor is gone (or was another process), not live ones."""
    gone = tmp_path / f"kaiwa-metrics-{_dead_pid()}-123"
    reused = tmp_path / f"kaiwa-metrics-{os.getpid()}-1"  # this pid, but not this start time
    live = metricsmode.auto_directory(os.getpid(), base=tmp_path)
    other = tmp_path / "kaiwa-metrics-notes"
    keep = tmp_path / f"kaiwa-metrics-{os.getppid()}"
    for path in (gone, reused, live, other, keep):
        path.mkdir()
    metricsmode.sweep_stale_auto_directories(tmp_path, keep=keep)
    assert not gone.exists()
    assert not reused.exists() or metricsmode.start_ticks(os.getpid()) is None
    assert live.exists()
    assert other.exists()
    assert keep.exists()


def test_the_directory_must_be_a_private_real_directory(tmp_path: Path) -> None:
    """It is created mode 0700; a symlink or a file in its place is refused with a message saying what to do."""
    made = tmp_path / "made"
    metricsmode.ensure_private_directory(made)
    assert made.is_dir()
    assert made.stat().st_mode & 0o777 == 0o700
    link = tmp_path / "link"
    link.symlink_to(made)
    with pytest.raises(ImproperlyConfigured, match="not a directory"):
        metricsmode.ensure_private_directory(link)
    plain = tmp_path / "plain"
    plain.write_text("x")
    with pytest.raises(ImproperlyConfigured, match="KAIWA_METRICS_DIR"):
        metricsmode.ensure_private_directory(plain / "sub")


def test_a_dead_processs_live_gauges_stop_counting_but_its_counters_stay(tmp_path: Path) -> None:
    """Open connections of a worker that died leave the sum; what it counted before stays in the totals."""
    env = {**os.environ, metricsmode.ENV: str(tmp_path)}
    subprocess.run([sys.executable, "-c", _RECORD], env=env, check=True, timeout=60)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert any(n.startswith("gauge_livesum_") for n in names), names
    assert any(n.startswith("counter_") for n in names), names
    metricsmode.sweep_dead_processes(tmp_path)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert not any(n.startswith("gauge_livesum_") for n in names), names
    assert any(n.startswith("counter_") for n in names), names
