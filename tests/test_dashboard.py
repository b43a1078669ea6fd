"""The Grafana dashboard and docs/operations.md name exactly the metrics Kaiwa exports."""

from __future__ import annotations

import json
import re
from pathlib import Path

from chat import metrics
from wsapp.metricsroute import _LiveCollector
from wsapp.readiness import Live

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "docs" / "grafana-kaiwa.json"
OPERATIONS = ROOT / "docs" / "operations.md"
NAME = re.compile(r"\bkaiwa_[a-z_]+\b")


def exported() -> tuple[set[str], set[str]]:
    """(sample names a scrape can hold, the names docs list: counters with _total, histograms bare)."""
    live = Live(redis_ok=True, database_ok=True, backlog=0, oldest_seconds=0.0, unstored=0)
    families = [*metrics.REGISTRY.collect(), *_LiveCollector(live).collect()]
    samples: set[str] = set()
    documented: set[str] = set()
    for family in families:
        if family.type == "histogram":
            samples |= {f"{family.name}_{part}" for part in ("bucket", "sum", "count")}
            documented.add(family.name)
        elif family.type == "counter":
            samples.add(f"{family.name}_total")
            documented.add(f"{family.name}_total")
        else:
            samples.add(family.name)
            documented.add(family.name)
    return samples, documented


def test_every_dashboard_query_uses_exported_metrics() -> None:
    """Each panel's expressions name only series /metrics serves (a renamed metric would leave a panel empty)."""
    samples, _ = exported()
    dashboard = json.loads(DASHBOARD.read_text())
    panels = [p for p in dashboard["panels"] if p["type"] == "timeseries"]
    assert len(panels) >= 12
    used: set[str] = set()
    for panel in panels:
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            names = set(NAME.findall(target["expr"]))
            assert names, target
            assert names <= samples, (panel["title"], names - samples)
            used |= names
    # The dashboard shows every family (some through their histogram buckets).
    shown = {re.sub(r"_(bucket|sum|count|total)$", "", name) for name in used}
    families = {re.sub(r"_(bucket|sum|count|total)$", "", name) for name in samples}
    assert families - shown <= {"kaiwa_redis_ping_failures", "kaiwa_unstored_recorded", "kaiwa_gap_repaired_messages"}


def test_operations_md_lists_every_metric() -> None:
    """docs/operations.md has a row for every metric, under the name a scrape shows, and no stale name."""
    _, documented = exported()
    text = OPERATIONS.read_text()
    rows = set(re.findall(r"^\| `(kaiwa_[a-z_]+)` \|", text, flags=re.MULTILINE))
    assert rows == documented
