"""Turn one run's results into terminal tables, JSON, PNG plots and docs/performance.md.

Every figure written here is read from the results of the run being reported;
nothing is typed in by hand.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from bench import uploadsreport
from bench.procs import QUIET_BUSY_PERCENT, ROOT
from bench.servers import KINDS

RESULTS_DIR = ROOT / "bench" / "results"


def run_kind(results: dict[str, Any]) -> str:
    """ "full" (every server, every scenario, full sizes), "quick", or "partial"."""
    meta = results["meta"]
    if meta["mode"] == "quick":
        return "quick"
    return "partial" if meta.get("partial") else "full"


def outputs(results: dict[str, Any]) -> tuple[Path, Path, str]:
    """(page, image directory, name of the "latest" JSON) for a run.

    Only a complete full run writes docs/performance.md and docs/img/; a quick
    run (CI, smoke tests) or a partial one (some servers or scenarios) writes
    the same page and plots under bench/results/quick/ or .../partial/, so it
    never replaces the figures of a full run.
    """
    kind = run_kind(results)
    if kind == "full":
        return ROOT / "docs" / "performance.md", ROOT / "docs" / "img", "latest.json"
    base = RESULTS_DIR / kind
    return base / "performance.md", base / "img", f"latest-{kind}.json"


ORDER = ["kaiwa", "kaiwa-websockets", "kaiwa-wsproto", "channels", "relay", "echo"]
KB = 1024
MB = 1024 * 1024


# -- small formatting helpers ----------------------------------------------------------


def label(kind: str) -> str:
    return KINDS[kind].label if kind in KINDS else kind


def n(value: Any, digits: int = 0) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and digits:
        return f"{value:,.{digits}f}"
    if isinstance(value, (int, float)):
        return f"{round(value):,}"
    return str(value)


def ms(value: Any) -> str:
    return "-" if value is None else f"{value:,.1f}"


def bystander_losses(by: dict[str, Any]) -> str:
    """The bystanders' losses, and for any where the missing deliveries stood (see lostDetail in loadgen.js)."""
    text = f"lost {n(by['lost'])} of {n(by['expected'])}"
    detail = by.get("lost_detail")
    if by["lost"] and detail:
        parts = {
            "skipped": "skipped by a receiver that got later ones",
            "not_reached": "not reached yet by an open receiver",
            "receiver_closed": "for a receiver whose socket had closed",
            "unanswered": "never answered",
        }
        text += " (" + ", ".join(f"{n(detail[k])} {v}" for k, v in parts.items() if detail.get(k)) + ")"
    return text


def size(b: int) -> str:
    if b >= MB:
        return f"{b // MB} MB"
    if b >= KB:
        return f"{b // KB} KB"
    return f"{b} B"


def mib(b: Any) -> str:
    return "-" if b is None else f"{b / MB:,.1f} MiB"


def codes(d: dict[str, int]) -> str:
    return ", ".join(f"{k}: {v}" for k, v in sorted(d.items())) or "-"


def text_table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))
    out = [line, "  ".join("-" * w for w in widths)]
    out += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(out)


def md_table(headers: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    out += ["| " + " | ".join(c.replace("|", "/") for c in r) + " |" for r in rows]
    return "\n".join(out)


def entries(results: dict[str, Any], scenario: str) -> Iterable[tuple[str, dict[str, Any]]]:
    per = results["scenarios"].get(scenario, {})
    for kind in ORDER:
        if kind in per:
            yield kind, per[kind]


# -- tables -------------------------------------------------------------------------------


def _rising_tables(results: dict[str, Any], scenario: str) -> tuple[list[str], list[list[str]], list[list[str]]]:
    head = ["server", "sustained deliveries/s", "at msg/s", "first failure", "p99 ms at best", "loadgen CPU at best"]
    rows, steps = [], []
    for kind, entry in entries(results, scenario):
        if "error" in entry:
            rows.append([label(kind), "error", "-", entry["error"][:80], "-", "-"])
            continue
        r = entry["result"]
        best = next((s for s in reversed(r["steps"]) if s["sustainable"]), None)
        rows.append(
            [
                label(kind),
                n(r["max_sustainable_deliveries_per_s"]),
                n(r["max_sustainable_rate_msgs"]),
                r["first_failure"] or r.get("stopped_early") or "none up to the highest rate tried",
                ms(best["latency_ms"]["normal"]["p99"]) if best else "-",
                f"{best['loadgen_cpu_percent']}%" if best else "-",
            ]
        )
        for s in r["steps"]:
            d = s["deliveries"]["normal"]
            res = s["resources"]
            steps.append(
                [
                    label(kind),
                    n(s["rate_msgs"]),
                    n(s["offered_deliveries_per_s"]),
                    n(s["delivered_per_s"]),
                    ms(s["latency_ms"]["normal"]["p50"]),
                    ms(s["latency_ms"]["normal"]["p99"]),
                    n(d["lost"]),
                    codes(s["refused"]),
                    n(s["out_of_order"]),
                    f"{res.get('server_cpu_mean', '-')}% ({res.get('server_cores_busy_mean', '-')}%)",
                    f"{res.get('redis_cpu_mean', '-')}%",
                    f"{s['loadgen_cpu_percent']}%",
                    "yes" if s["sustainable"] else ("no, measured again" if s.get("retried") else "NO"),
                ]
            )
    return head, rows, steps


STEP_HEAD = [
    "server",
    "msg/s",
    "offered deliv/s",
    "delivered/s",
    "p50 ms",
    "p99 ms",
    "lost",
    "refused",
    "out of order",
    "server CPU (core busy)",
    "Redis CPU",
    "loadgen CPU",
    "ok",
]


def tables(results: dict[str, Any]) -> list[tuple[str, list[str], list[list[str]]]]:
    """(title, headers, rows) for every scenario that ran."""
    out: list[tuple[str, list[str], list[list[str]]]] = []
    for scenario, title in (
        ("calibration", "Calibration: the load generator against the echo server"),
        ("fanout", "Fan-out: 1 room, senders + receivers, rate rising until p99 > 100 ms or any loss"),
        ("many_rooms", "Many rooms"),
    ):
        if scenario not in results["scenarios"]:
            continue
        head, rows, steps = _rising_tables(results, scenario)
        out.append((title, head, rows))
        out.append((title + " (every step)", STEP_HEAD, steps))

    if "idle" in results["scenarios"]:
        rows = []
        for kind, e in entries(results, "idle"):
            if "error" in e:
                rows.append([label(kind), "error: " + e["error"][:80], *["-"] * 6])
                continue
            r = e["result"]
            rows.append(
                [
                    label(kind),
                    f"{r['opened']:,} / {r['connections']:,}",
                    n(r["still_open_after_settle"]),
                    n(r["server_bytes_per_connection"]),
                    n(r["redis_bytes_per_connection"]),
                    n(r.get("server_open_files_per_connection"), 2),
                    n(r.get("redis_clients_per_connection"), 2),
                    ms(r["open_seconds"]),
                ]
            )
        out.append(
            (
                "Idle connections (connected, authenticated where the server checks sessions, joined to a room of 10)",
                [
                    "server",
                    "opened",
                    "still open",
                    "server bytes/conn",
                    "Redis bytes/conn",
                    "server files/conn",
                    "Redis clients/conn",
                    "seconds to open",
                ],
                rows,
            )
        )

    if "storm" in results["scenarios"]:
        rows = []
        for kind, e in entries(results, "storm"):
            if "error" in e:
                rows.append([label(kind), "error: " + e["error"][:80], *["-"] * 8])
                continue
            r = e["result"]
            by = r["bystander"]
            for wave, what in (("cold", "first connection"), ("warm", "reconnect (session checked before)")):
                w = r[wave]
                if "waited_after_closing_s" in w:
                    what += f", once the server was idle ({w['waited_after_closing_s']} s after the closes)"
                rows.append(
                    [
                        label(kind),
                        what,
                        f"{w['succeeded']:,} / {w['clients']:,}",
                        ms(w["seconds_to_last_joined"]),
                        n(w["handshakes_per_s"]),
                        n(w["server_cpu_ms_per_connection"], 2),
                        ms(w["connect_to_joined_ms"]["p99"]),
                        f"{w['loadgen_cpu_percent']}%",
                        codes(w["failures"]),
                        f"p99 {ms(by['latency_ms']['p99'])} ms, {bystander_losses(by)}",
                    ]
                )
        out.append(
            (
                "Connect storm: every client at once (handshake, session check, join), then all again",
                [
                    "server",
                    "wave",
                    "joined",
                    "s to last joined",
                    "joins/s",
                    "server CPU ms/conn",
                    "p99 ms",
                    "loadgen CPU",
                    "failures",
                    "clients already connected (both waves)",
                ],
                rows,
            )
        )

    if "restart" in results["scenarios"]:
        rows = []
        for kind, e in entries(results, "restart"):
            if "error" in e:
                rows.append([label(kind), "error: " + e["error"][:80], *["-"] * 6])
                continue
            r = e["result"]
            d = r["deliveries"]["normal"]
            rows.append(
                [
                    label(kind),
                    f"{r['clients']:,} in {r['rooms']} rooms, {n(r['rate_msgs'])} msg/s",
                    ms(r["server_stop_and_start_s"]),
                    ms(r["seconds_until_all_rejoined"]) if r["seconds_until_all_rejoined"] is not None else "never",
                    n(r["reconnects"]),
                    f"{n(d['lost'])} of {n(d['expected'])}",
                    codes(r["refused"]),
                    ms(r["latency_ms"]["normal"]["p99"]),
                ]
            )
        out.append(
            (
                "Reconnect storm: the server restarted under load; every client reconnects with join + since",
                [
                    "server",
                    "load",
                    "s stopped + started",
                    "s until all rejoined",
                    "reconnects",
                    "missed deliveries",
                    "sends refused (sender offline)",
                    "p99 ms",
                ],
                rows,
            )
        )

    for scenario, title in (
        ("payload_default", "Payload sweep, default limits (per receiver: delivered / refused / lost)"),
        ("payload_large", "Payload sweep, raised limits (per receiver: delivered / refused / lost)"),
    ):
        if scenario not in results["scenarios"]:
            continue
        rows = []
        for kind, e in entries(results, scenario):
            if "error" in e:
                rows.append([label(kind), "error: " + e["error"][:80], *["-"] * 7])
                continue
            for p in e["result"]:
                d = p["deliveries"]["normal"]
                rows.append(
                    [
                        label(kind),
                        size(p["size"]),
                        f"{p['acked']}/{p['messages']}",
                        codes(p["refused"]),
                        f"{d['delivered']} / {d['refused']} / {d['lost']}",
                        ms(p["latency_ms"]["normal"]["p50"]),
                        ms(p["latency_ms"]["normal"]["p99"]),
                        n(p["delivered_mb_per_s"], 1),
                        mib(p["resources"].get("server_rss_max")),
                    ]
                )
        out.append(
            (
                title,
                [
                    "server",
                    "body",
                    "acked",
                    "refused (code)",
                    "deliveries d/r/l",
                    "p50 ms",
                    "p99 ms",
                    "MB/s",
                    "server RSS max",
                ],
                rows,
            )
        )

    for scenario, title in (
        ("slow", "Slow readers, 1 KB messages: 10% of receivers stop reading"),
        ("slow_large", "Slow readers, 1 MB messages: 10% of receivers stop reading"),
    ):
        if scenario not in results["scenarios"]:
            continue
        rows = []
        for kind, e in entries(results, scenario):
            if "error" in e:
                rows.append([label(kind), "error: " + e["error"][:80], *["-"] * 6])
                continue
            r = e["result"]
            dn, ds = r["deliveries"]["normal"], r["deliveries"]["slow"]
            rows.append(
                [
                    label(kind),
                    f"{r['rate_msgs']} msg/s",
                    ms(r["latency_ms"]["normal"]["p99"]),
                    f"{dn['delivered']}/{dn['expected']}, lost {dn['lost']}",
                    ", ".join(str(c) for c in r["slow_close_codes"]) or "none",
                    n(r["slow_reconnects"]),
                    f"{ds['delivered']}/{ds['expected']}, lost {ds['lost']}",
                    n(dn["lost"] + ds["lost"]),
                ]
            )
        out.append(
            (
                title,
                [
                    "server",
                    "rate",
                    "others' p99 ms",
                    "others delivered",
                    "slow: close codes",
                    "slow: reconnects",
                    "slow delivered",
                    "total lost",
                ],
                rows,
            )
        )

    rows = []
    for scenario, db in (("persist_sqlite", "SQLite"), ("persist_postgres", "PostgreSQL")):
        for kind, e in entries(results, scenario):
            if "error" in e:
                rows.append([label(kind), db, "error: " + e["error"][:80], *["-"] * 6])
                continue
            r = e["result"]
            rows.append(
                [
                    label(kind),
                    db,
                    n(r["offered_rate_msgs"]),
                    f"{r['acked']}/{r['sent']}",
                    n(r["db"]["rows"]),
                    n(r["acked_missing_from_db"]),
                    ms(r["db"]["lag_ms_p50"]),
                    ms(r["db"]["lag_ms_p99"]),
                    n(r["db"]["rows_per_s_insert_window"]),
                ]
            )
    pg = results["meta"].get("postgres", "available")
    if pg != "available" and rows:
        rows.append(["(all)", "PostgreSQL", "-", pg, *["-"] * 5])
    if rows:
        out.append(
            (
                "Persistence: acked messages reaching the database",
                [
                    "server",
                    "database",
                    "offered msg/s",
                    "acked/sent",
                    "rows",
                    "acked but missing",
                    "lag p50 ms",
                    "lag p99 ms",
                    "rows/s",
                ],
                rows,
            )
        )
    out += uploadsreport.tables(results)
    return out


def print_tables(results: dict[str, Any]) -> None:
    for title, head, rows in tables(results):
        if not rows:
            continue
        print(f"\n== {title}")
        print(text_table(head, rows))
    if results["errors"]:
        print("\n== Harness errors")
        for err in results["errors"]:
            print(" - " + err.splitlines()[0][:300])


# -- JSON -----------------------------------------------------------------------------------


def save_json(results: dict[str, Any]) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    stamp = results["meta"]["started"].replace(":", "").replace("-", "").replace("+0000", "Z")
    path = RESULTS_DIR / f"{stamp}-{run_kind(results)}.json"
    text = json.dumps(results, indent=1, default=str)
    path.write_text(text)
    (RESULTS_DIR / outputs(results)[2]).write_text(text)
    return path


# -- plots ----------------------------------------------------------------------------------


COLORS = {
    "kaiwa": "#1b7f3b",
    "kaiwa-websockets": "#7fbf4d",
    "kaiwa-wsproto": "#a0522d",
    "channels": "#c0392b",
    "relay": "#2c6fbb",
    "echo": "#888888",
}


def plots(results: dict[str, Any], img_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    img_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []

    panels = [s for s in ("fanout", "many_rooms") if s in results["scenarios"]]
    if panels:
        fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 4.5), squeeze=False)
        for ax, scenario in zip(axes[0], panels, strict=True):
            series = list(entries(results, scenario))
            if scenario == "fanout":
                series += list(entries(results, "calibration"))
            for kind, e in series:
                if "error" in e:
                    continue
                steps = e["result"]["steps"]
                xs = [s["offered_deliveries_per_s"] for s in steps]
                for pct, style in (("p50", ":"), ("p90", "--"), ("p99", "-")):
                    ys = [s["latency_ms"]["normal"][pct] or float("nan") for s in steps]
                    ax.plot(
                        xs, ys, style, color=COLORS.get(kind), marker="o" if pct == "p99" else None, markersize=3,
                        label=f"{label(kind)} {pct}",
                    )  # fmt: skip
                bad = [s for s in steps if not s["sustainable"]]
                ax.scatter(
                    [s["offered_deliveries_per_s"] for s in bad],
                    [s["latency_ms"]["normal"]["p99"] or 1 for s in bad],
                    marker="x", s=80, color=COLORS.get(kind), zorder=5,
                )  # fmt: skip
            ax.axhline(100, color="black", linewidth=0.8, linestyle="-.")
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlabel("offered deliveries/s")
            ax.set_ylabel("latency, ms (send to receive)")
            where = "fan-out: 1 room" if scenario == "fanout" else "many rooms"
            ax.set_title(f"{where} (x: loss, refusal or p99 > 100 ms)", fontsize=10)
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=7, ncol=2)
        fig.tight_layout()
        path = img_dir / "bench-latency.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)

    panels = [s for s in ("payload_default", "payload_large") if s in results["scenarios"]]
    if panels:
        fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 5.2), squeeze=False)
        for ax, scenario in zip(axes[0], panels, strict=True):
            series = [(k, e) for k, e in entries(results, scenario) if "error" not in e]
            sizes = sorted({p["size"] for _, e in series for p in e["result"]})
            width = 0.8 / max(1, len(series))
            for i, (kind, e) in enumerate(series):
                by = {p["size"]: p["deliveries"]["normal"] for p in e["result"]}
                xs = [j + i * width for j in range(len(sizes))]
                tot = [max(1, by[s]["expected"]) if s in by else 1 for s in sizes]
                dv = [100 * by[s]["delivered"] / t if s in by else 0 for s, t in zip(sizes, tot, strict=True)]
                rf = [100 * by[s]["refused"] / t if s in by else 0 for s, t in zip(sizes, tot, strict=True)]
                ls = [100 * by[s]["lost"] / t if s in by else 0 for s, t in zip(sizes, tot, strict=True)]
                c = COLORS.get(kind)
                ax.bar(xs, dv, width, color=c, label=f"{label(kind)} delivered")
                ax.bar(xs, rf, width, bottom=dv, color=c, alpha=0.4, hatch="//", label=f"{label(kind)} refused")
                ax.bar(
                    xs, ls, width, bottom=[a + b for a, b in zip(dv, rf, strict=True)], color="black",
                    label="lost (any server)" if i == 0 else None,
                )  # fmt: skip
            ax.set_xticks([j + width * (len(series) - 1) / 2 for j in range(len(sizes))])
            ax.set_xticklabels([size(s) for s in sizes])
            ax.set_ylabel("% of expected deliveries")
            ax.set_title("default limits" if scenario == "payload_default" else "raised limits", fontsize=10)
            ax.set_ylim(0, 105)
            ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=3)
        fig.tight_layout()
        path = img_dir / "bench-payload.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    written += uploadsreport.plots(results, img_dir)
    return written


# -- the plain-language answer -------------------------------------------------------------------


def _resource_verdict(res: dict[str, Any], loadgen_cpu: float, cores_server: int) -> str:
    """Which measured resource was exhausted in a step, from the sampler's figures."""
    found = []
    scpu = res.get("server_cpu_mean") or 0
    rcpu = res.get("redis_cpu_mean") or 0
    if scpu >= 85:
        found.append(f"server CPU ({scpu}% of a core)")
    if rcpu >= 85:
        found.append(f"Redis CPU ({rcpu}%)")
    if (res.get("redis_output_buffer_max") or 0) >= 8 * MB:
        found.append(f"Redis client output buffers ({mib(res['redis_output_buffer_max'])})")
    if (res.get("sock_tx_max") or 0) >= 4 * MB:
        found.append(f"socket send buffers ({mib(res['sock_tx_max'])} queued in the kernel)")
    busy = res.get("server_cores_busy_mean") or 0
    if busy >= 85 and scpu + rcpu < 85:
        found.append(
            f"the server's core(s) ({busy}% busy, of which the server {scpu}% and Redis {rcpu}%: "
            "other processes on the machine took the rest, so this step was contended)"
        )
    rss = res.get("server_rss_max") or 0
    try:
        import psutil

        total = psutil.virtual_memory().total
    except Exception:
        total = 0
    if total and rss >= total / 4:
        found.append(f"memory (server RSS {mib(rss)} of {mib(total)})")
    if loadgen_cpu >= 90:
        found.append(f"the load generator's CPU ({loadgen_cpu}%), so the server's real limit may be higher")
    if not found:
        return (
            f"no measured resource was exhausted (server CPU {scpu}%, Redis CPU {rcpu}%, "
            f"kernel send queues {mib(res.get('sock_tx_max'))}, server RSS {mib(res.get('server_rss_max'))})"
        )
    return ", ".join(found)


def answer(results: dict[str, Any]) -> list[str]:
    """Per server: the rate and payload size where it first lost or refused messages, and what ran out."""
    lines: list[str] = []
    sc = results["scenarios"]
    cal = sc.get("calibration", {}).get("echo", {}).get("result")
    if cal:
        best = next((st for st in reversed(cal["steps"]) if st["sustainable"]), None)
        lines.append(
            f"- **load generator** (against the echo server): sustained {n(cal['max_sustainable_deliveries_per_s'])} "
            f"deliveries/s"
            + (f" using {best['loadgen_cpu_percent']}% of its core" if best else "")
            + (f"; {cal['first_failure']}" if cal["first_failure"] else "")
            + ". A server figure close to this one is the load generator's limit, not the server's."
        )
        top = max(cal["steps"], key=lambda st: st["delivered_per_s"], default=None)
        if top is not None and not top["sustainable"]:
            # The step that failed may have failed on the echo server's core, not the generator's:
            # how much the generator itself took in, and which core was full, tell them apart.
            res = top.get("resources") or {}
            lines.append(
                f"  Its highest step took in {n(top['delivered_per_s'])} deliveries/s with the generator's process "
                f"at {top['loadgen_cpu_percent']}% of a core (its core {res.get('loadgen_cores_busy_mean', '-')}% "
                f"busy, the echo server's core {res.get('server_cores_busy_mean', '-')}% busy)."
            )
    for kind in ("kaiwa", "kaiwa-websockets", "kaiwa-wsproto", "channels", "relay"):
        parts: list[str] = []
        for scen, where in (("fanout", "fan-out"), ("many_rooms", "many rooms")):
            fan = sc.get(scen, {}).get(kind)
            if not fan or "result" not in fan:
                continue
            r = fan["result"]
            steps = r["steps"]
            room = f"{r['rooms']} room{'s' if r['rooms'] != 1 else ''} of {r['connections_per_room']}"
            best = next((st for st in reversed(steps) if st["sustainable"]), None)
            if best:
                text = (
                    f"{where} ({room}): sustained {n(r['max_sustainable_deliveries_per_s'])} deliveries/s "
                    f"({n(r['max_sustainable_rate_msgs'])} msg/s, p99 {ms(best['latency_ms']['normal']['p99'])} ms)"
                )
            else:
                text = f"{where} ({room}): no rate tried was sustainable"
            if r["first_failure"]:
                last = steps[-1]
                text += f"; failed {r['first_failure']}; what ran out first: " + _resource_verdict(
                    last["resources"], last["loadgen_cpu_percent"], 1
                )
            elif r.get("stopped_early"):
                text += f"; {r['stopped_early']}"
            if r.get("loadgen_limited"):
                text += "; **the load generator, not the server, was the limit** (its CPU near a full core)"
            first_loss = next((st for st in steps if st["deliveries"]["normal"]["lost"] > 0), None)
            if first_loss is not None:
                d = first_loss["deliveries"]["normal"]
                text += (
                    f"; **first lost messages at {n(first_loss['rate_msgs'])} msg/s** "
                    f"({n(d['lost'])} of {n(d['expected'])} deliveries, with no error and no close code)"
                    if not first_loss.get("closes")
                    else f"; first lost messages at {n(first_loss['rate_msgs'])} msg/s "
                    f"({n(d['lost'])} of {n(d['expected'])} deliveries; closes: {codes(first_loss.get('closes', {}))})"
                )
            else:
                top = max(st["rate_msgs"] for st in steps) if steps else 0
                text += f"; lost nothing at any rate tried (up to {n(top)} msg/s)"
            parts.append(text)
        for scen in ("payload_default", "payload_large"):
            pay = sc.get(scen, {}).get(kind)
            if not pay or "result" not in pay:
                continue
            where = "payload sweep, default limits" if scen == "payload_default" else "payload sweep, raised limits"
            lost = [p for p in pay["result"] if p["deliveries"]["normal"]["lost"] > 0]
            refused = [p for p in pay["result"] if p["refused"]]
            text = f"{where}: "
            if lost:
                p = lost[0]
                text += (
                    f"**first lost messages at {size(p['size'])} bodies** ({p['deliveries']['normal']['lost']} of "
                    f"{p['deliveries']['normal']['expected']} deliveries); what ran out first: "
                    + _resource_verdict(p["resources"], p["loadgen_cpu_percent"], 1)
                )
            else:
                text += f"lost nothing up to {size(max(p['size'] for p in pay['result']))}"
            if refused:
                p = refused[0]
                text += f"; from {size(p['size'])} on, refused ({codes(p['refused'])})"
            parts.append(text)
        for scen, what in (("slow", "1 KB"), ("slow_large", "1 MB")):
            sl = sc.get(scen, {}).get(kind)
            if not sl or "result" not in sl:
                continue
            r = sl["result"]
            dn, ds = r["deliveries"]["normal"], r["deliveries"]["slow"]
            closes = ", ".join(str(c) for c in r["slow_close_codes"]) or "no close"
            http = r.get("recovered_over_http") or 0
            parts.append(
                f"stalled readers, {what} at {r['rate_msgs']} msg/s: the stalled ones saw {closes}"
                f" ({r['slow_reconnects']} reconnects) and got {ds['delivered']:,} of {ds['expected']:,}"
                + (f" ({http:,} of them from the history API after `reset`)" if http else "")
                + "; "
                f"the others lost {dn['lost']:,} (p99 {ms(r['latency_ms']['normal']['p99'])} ms); "
                f"peak kernel send queue {mib(r['resources'].get('sock_tx_max'))}, "
                f"Redis output buffer {mib(r['resources'].get('redis_output_buffer_max'))}, "
                f"server RSS {mib(r['resources'].get('server_rss_max'))}"
            )
        if parts:
            lines.append(f"- **{label(kind)}**")
            lines += [f"  - {p}." for p in parts]
    return lines


def losses(results: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Lost deliveries per server and scenario (every step, every receiver group)."""
    names = {
        "fanout": "fan-out",
        "many_rooms": "many rooms",
        "payload_default": "payload, default limits",
        "payload_large": "payload, raised limits",
        "slow": "slow readers 1 KB",
        "slow_large": "slow readers 1 MB",
        "storm": "connect storm (already connected)",
        "restart": "restart under load",
    }
    present = [s for s in names if s in results["scenarios"]]
    rows = []
    for kind in ("kaiwa", "kaiwa-websockets", "kaiwa-wsproto", "channels", "relay"):
        row = [label(kind)]
        seen = False
        for scen in present:
            e = results["scenarios"][scen].get(kind)
            if not e or "result" not in e:
                row.append("-" if not e else "error")
                continue
            seen = True
            r = e["result"]
            if scen == "storm":
                lost, expected = r["bystander"]["lost"], r["bystander"]["expected"]
                row.append(f"{lost:,} of {expected:,}")
                continue
            items = r["steps"] if isinstance(r, dict) and "steps" in r else (r if isinstance(r, list) else [r])
            lost = sum(d["lost"] for it in items for d in it["deliveries"].values())
            expected = sum(d["expected"] for it in items for d in it["deliveries"].values())
            row.append(f"{lost:,} of {expected:,}")
        for scen in ("persist_sqlite", "persist_postgres"):
            e = results["scenarios"].get(scen, {}).get(kind)
            if e and "result" in e:
                seen = True
        if seen:
            rows.append(row)
    return ["server", *(names[s] for s in present)], rows


def targets(results: dict[str, Any]) -> list[str]:
    """Where Kaiwa stands against the targets set in the benchmark issue."""
    sc = results["scenarios"]
    out = []
    k = sc.get("fanout", {}).get("kaiwa", {}).get("result")
    r = sc.get("fanout", {}).get("relay", {}).get("result")
    if k and r:
        kv, rv = k["max_sustainable_deliveries_per_s"], r["max_sustainable_deliveries_per_s"]
        if not rv:
            verdict = "not measurable (the bare relay sustained no rate)"
        elif not k["first_failure"] and not r["first_failure"]:
            verdict = "not decided (both sustained the highest rate tried: the ramp found neither limit)"
        else:
            # Compared on the offered rate: at the same step the two delivered/s differ only
            # by how late the load generator's own sends ran.
            verdict = "met" if k["max_sustainable_rate_msgs"] >= r["max_sustainable_rate_msgs"] else "not met"
        out.append(
            f"- fan-out at least the bare relay's sustainable deliveries/s at p99 < 100 ms: **{verdict}** "
            f"(Kaiwa {n(kv)}/s at {k['max_sustainable_rate_msgs']} msg/s, bare relay {n(rv)}/s at "
            f"{r['max_sustainable_rate_msgs']} msg/s)."
        )
        cost = cost_per_delivery(k, r)
        if cost:
            out.append(f"  {cost}")
    k = sc.get("many_rooms", {}).get("kaiwa", {}).get("result")
    r = sc.get("many_rooms", {}).get("relay", {}).get("result")
    if k and r and r["max_sustainable_rate_msgs"]:
        share = k["max_sustainable_rate_msgs"] / r["max_sustainable_rate_msgs"]
        out.append(
            f"- many rooms: knee at least 0.8x the bare relay's: **{'met' if share >= 0.8 else 'not met'}** "
            f"(Kaiwa {k['max_sustainable_rate_msgs']} msg/s, bare relay {r['max_sustainable_rate_msgs']} msg/s: "
            f"{share:.2f}x)."
        )
        ok_k = {s["rate_msgs"]: s for s in k["steps"] if s["sustainable"]}
        ok_r = {s["rate_msgs"]: s for s in r["steps"] if s["sustainable"]}
        common = sorted(set(ok_k) & set(ok_r))
        ck = _cpu_us_per_delivery(ok_k[common[-1]]) if common else None
        cr = _cpu_us_per_delivery(ok_r[common[-1]]) if common else None
        if ck is not None and cr is not None:
            verdict = "met" if ck <= 1.2 * cr else "not met"
            out.append(
                f"- many rooms: CPU per message within 1.2x the bare relay's: **{verdict}** "
                f"(at {common[-1]} msg/s: Kaiwa {ck:.1f} µs, bare relay {cr:.1f} µs per delivery, "
                f"{ck / cr:.2f}x; server process and its Redis)."
            )
    st = sc.get("storm", {}).get("kaiwa", {}).get("result")
    # The floor under both storm targets: the same uvicorn handshakes with no session, room or presence.
    relay_storm = sc.get("storm", {}).get("relay", {}).get("result") or {}
    for_relay = {wave: relay_storm.get(wave) or {} for wave in ("cold", "warm")}
    if st:
        for wave, what in (("cold", "first connection"), ("warm", "reconnect")):
            w = st[wave]
            cpu = w["server_cpu_ms_per_connection"]
            floor = for_relay[wave].get("server_cpu_ms_per_connection")
            if cpu is not None:
                out.append(
                    f"- handshake + `join` at most 1 ms of server CPU per connection ({what}): "
                    f"**{'met' if cpu <= 1.0 else 'not met'}** ({cpu:.2f} ms over {w['succeeded']:,} clients at once"
                    + (
                        f"; the bare relay, same uvicorn handshake with nothing behind it: {floor:.2f} ms"
                        if floor
                        else ""
                    )
                    + ")."
                )
        w = st["warm"]
        last = w["seconds_to_last_joined"]
        all_in = w["succeeded"] == w["clients"]
        if w["clients"] < 10000:
            verdict = f"not measured at 10,000 (this run: {w['clients']:,})"
        else:
            verdict = "met" if all_in and last <= 15 else "not met"
        out.append(
            "- 10,000 authenticated clients reconnecting at once all joined within 15 s: "
            f"**{verdict}** ({w['succeeded']:,} of {w['clients']:,} joined, the last after {last:.1f} s"
            + (
                f"; the bare relay's last after {for_relay['warm']['seconds_to_last_joined']:.1f} s"
                if for_relay["warm"].get("seconds_to_last_joined")
                else ""
            )
            + ")."
        )
        by = st["bystander"]
        p99 = by["latency_ms"]["p99"]
        out.append(
            "- clients already connected during the storm miss nothing and see p99 <= 250 ms: "
            f"**{'met' if by['lost'] == 0 and p99 is not None and p99 <= 250 else 'not met'}** "
            f"(p99 {ms(p99)} ms, {bystander_losses(by)})."
        )
    rs = sc.get("restart", {}).get("kaiwa", {}).get("result")
    if rs:
        back = rs["seconds_until_all_rejoined"]
        out.append(
            "- a restart under load: every client back, nothing missed with `since`: "
            f"**{'met' if back is not None and rs['missed'] == 0 else 'not met'}** "
            + (
                f"(all {rs['joined_before_restart']:,} clients back {ms(back)} s after the restart began, "
                if back is not None
                else f"({n(rs['still_out'])} of {rs['joined_before_restart']:,} clients still not back "
                f"{ms(rs.get('waited_s', 60))} s after it, "
            )
            + f"{n(rs['missed'])} deliveries missed, {n(rs['reconnects'])} reconnects)."
        )
    idle = sc.get("idle", {}).get("kaiwa", {}).get("result")
    if idle and idle.get("server_bytes_per_connection") is not None:
        kb = idle["server_bytes_per_connection"] / 1024
        out.append(
            f"- at most 20 KB of server memory per idle connection: **{'met' if kb <= 20 else 'not met'}** "
            f"({kb:.1f} KB measured over {idle['opened']:,} connections)."
        )
    for row in losses(results)[1]:
        if row[0] == label("kaiwa"):
            lost_total = 0
            for cell in row[1:]:
                if " of " in cell:
                    lost_total += int(cell.split(" of ")[0].replace(",", ""))
            missing = sum(
                e["result"]["acked_missing_from_db"]
                for scen in ("persist_sqlite", "persist_postgres")
                if (e := sc.get(scen, {}).get("kaiwa")) and "result" in e
            )
            out.append(
                "- zero messages lost in every scenario: "
                f"**{'met' if lost_total == 0 and missing == 0 else 'not met'}** "
                f"({lost_total:,} deliveries lost over the live scenarios, {missing:,} acked messages missing from the "
                "database)."
            )
    return out


def _cpu_us_per_delivery(step: dict[str, Any]) -> float | None:
    res = step.get("resources") or {}
    cpu, redis_cpu, rate = res.get("server_cpu_mean"), res.get("redis_cpu_mean"), step.get("delivered_per_s")
    if cpu is None or not rate:
        return None
    return (cpu + (redis_cpu or 0.0)) / 100 * 1e6 / rate


def cost_per_delivery(kaiwa: dict[str, Any], relay: dict[str, Any]) -> str | None:
    """CPU per delivery (server + its Redis) at the highest rate both sustained.

    Unlike the sustained rate, this does not stop at the load generator's ceiling.
    """
    ok_k = {s["rate_msgs"]: s for s in kaiwa["steps"] if s["sustainable"]}
    ok_r = {s["rate_msgs"]: s for s in relay["steps"] if s["sustainable"]}
    common = sorted(set(ok_k) & set(ok_r))
    if not common:
        return None
    rate = common[-1]
    k, r = _cpu_us_per_delivery(ok_k[rate]), _cpu_us_per_delivery(ok_r[rate])
    if k is None or r is None:
        return None
    return (
        f"At {rate} msg/s, the highest rate both sustained, each delivery cost {k:.1f} µs of CPU in Kaiwa "
        f"(server process and its Redis) and {r:.1f} µs in the bare relay: **{r / k:.2f}x** the relay's "
        "efficiency."
    )


def ratios(results: dict[str, Any]) -> list[str]:
    sc = results["scenarios"]
    out = []

    def best(scen: str, kind: str) -> float | None:
        e = sc.get(scen, {}).get(kind)
        if not e or "result" not in e:
            return None
        v = e["result"]["max_sustainable_deliveries_per_s"]
        return float(v) if v else None

    for scen, what in (("fanout", "fan-out"), ("many_rooms", "many rooms")):
        k, c, r = best(scen, "kaiwa"), best(scen, "channels"), best(scen, "relay")
        if k and c:
            out.append(f"- {what}: Kaiwa sustains **{k / c:.1f}x** the deliveries/s of Django Channels.")
        if k and r:
            out.append(f"- {what}: Kaiwa sustains **{k / r:.2f}x** the deliveries/s of the bare relay.")
        if r and c:
            out.append(f"- {what}: the bare relay sustains {r / c:.1f}x the deliveries/s of Django Channels.")
        for variant in ("kaiwa-websockets", "kaiwa-wsproto"):
            other = best(scen, variant)
            if k and other:
                out.append(
                    f"- {what}: Kaiwa on `--ws {KINDS[variant].ws}` sustains **{other / k:.2f}x** the deliveries/s "
                    "of Kaiwa on the default `--ws websockets-sansio`."
                )
    idle = sc.get("idle", {})
    k = idle.get("kaiwa", {}).get("result", {}).get("server_bytes_per_connection")
    c = idle.get("channels", {}).get("result", {}).get("server_bytes_per_connection")
    if k and c:
        out.append(f"- idle memory: Kaiwa uses {k / 1024:.1f} KB per connection, Django Channels {c / 1024:.1f} KB.")
    st = sc.get("storm", {})
    k = st.get("kaiwa", {}).get("result", {}).get("handshakes_per_s")
    c = st.get("channels", {}).get("result", {}).get("handshakes_per_s")
    if k and c:
        out.append(f"- connect storm: Kaiwa completes {k / c:.1f}x the handshakes/s of Django Channels.")
    return out


# -- docs/performance.md ------------------------------------------------------------------------------


def markdown(results: dict[str, Any], images: list[Path], json_path: Path) -> str:
    meta = results["meta"]
    m = meta["machine"]
    v = m["versions"]
    out = [
        "# Kaiwa performance",
        "",
        "<!-- Generated by `python -m bench run` (make bench); do not edit by hand: re-run it. -->",
        "",
        f"Generated from the **{meta['mode']}** run started {meta['started']} "
        f"(took {meta.get('duration_s', '?')} s), commit `{m['git_commit']}`. "
        f"Raw results: `{_rel(json_path)}`.",
        "",
    ]
    if run_kind(results) == "partial":
        out += [
            "> **This is a partial run** (only some servers or scenarios): "
            f"servers {', '.join(meta.get('servers', []))}; scenarios {', '.join(meta.get('only') or ['all'])}.",
            "",
        ]
    busy = m.get("busy_before_percent")
    if busy is not None and busy > QUIET_BUSY_PERCENT:
        out += [
            f"> **The machine was not quiet**: {busy}% of its cores were busy before the run started, with "
            "nothing of the benchmark running yet. Another job competed for the cores: every figure below is "
            "likely low. Run again on a quiet machine before quoting them.",
            "",
        ]
    if meta["mode"] != "full":
        out += [
            "> **This is a quick smoke run** (small sizes, short steps): it shows the harness works, "
            "not what the servers can do. Run `make bench` for the figures to quote.",
            "",
        ]
    out += [
        "## Machine",
        "",
        f"- {m['cores']} cores, {m['cpu_model']}, {m['memory_bytes'] / 2**30:.1f} GiB memory; {m['os']}",
        f"- load average when the run started: {', '.join(str(x) for x in m['loadavg_start'])}; "
        f"at the end: {', '.join(str(x) for x in meta.get('loadavg_end', []))}"
        + (f"; cores busy before the run: {busy}%" if busy is not None else ""),
        f"- pinning: {m['pinning']}",
        f"- Python {m['python']}, Redis {m.get('redis', '?')}, uvicorn {v.get('uvicorn')}, "
        f"websockets {v.get('websockets')}, "
        f"Django {v.get('Django')}, FastAPI {v.get('fastapi')}, Starlette {v.get('starlette')}, "
        f"Channels {v.get('channels')}, channels-redis {v.get('channels-redis')}, redis-py {v.get('redis')}",
        f"- PostgreSQL: {meta['postgres']}",
        "",
        "## What was compared",
        "",
        "- **Kaiwa**: `uvicorn project.asgi:application --ws-per-message-deflate false`, production settings "
        "(`DEBUG=0`), after `manage.py migrate`; authentication, the Origin check, per-room sequencing, "
        "the Redis log and the embedded persistence worker all on. The bench raises only the per-user rate "
        "limits (a few bench users send thousands of messages/s): "
        + ", ".join(f"`{k}={val}`" for k, val in meta["kaiwa_env"]["all"].items())
        + "; for the raised-limits payload runs also "
        + ", ".join(f"`{k}={val}`" for k, val in meta["kaiwa_env"]["raised limits"].items())
        + " and uvicorn `--ws-max-size` to match.",
        "- **Django Channels** (`bench/channels_peer/`): Channels + channels_redis `RedisChannelLayer` (default "
        "capacity 100, expiry 60 s), `AuthMiddlewareStack` + `AllowedHostsOriginValidator`, each message saved "
        "with `database_sync_to_async` before `group_send`; `seq` from an in-process per-room counter; the same "
        "frames, the same uvicorn flags, the same Redis and database engine.",
        "- **bare relay** (`bench/bare_relay.py`): Starlette on the same uvicorn, Redis pub/sub, no auth, no "
        "persistence, `await send_text` to each member in turn (seq from a Redis `INCR` in the publishing script).",
        "- **echo** (`bench/loadgen-node/echo.js`, calibration): Node.js `ws`, in-process rooms, each message "
        "framed once and the same bytes written to every member: what it sustains is the load generator's own "
        "ceiling here.",
        f"- Every Python server runs on uvicorn's `--ws {m.get('uvicorn_ws', '?')}` WebSocket implementation "
        "(uvicorn's default); **Kaiwa (--ws websockets)** and **Kaiwa (--ws wsproto)** are Kaiwa on the other two, "
        "in the fan-out and many-rooms scenarios only.",
        f"- The load generator (`bench/loadgen-node/loadgen.js`) is Node.js {m.get('node', '?')} with `ws` "
        f"{m.get('node_ws', '?')}, driven by `python -m bench`; it runs on the load generator's core(s) and "
        "reports its own CPU in every step. A step where it used 90% of a core or more measured the generator, "
        "and the report says so.",
        "- Each server ran as its own process with its own fresh Redis (AOF on, `appendfsync everysec`) and a "
        "fresh database; users and sessions are real Django rows, every connection sends its session cookie "
        "and an `Origin` the server trusts.",
        "- Latency is from the *scheduled* send time (open-loop senders, the time travels in the body) to the "
        "receiver's read; a delivery is lost when a message was acked (or never answered) and a receiver that "
        "stayed joined never got it; refused when the sender got an `error` frame or a close code for it.",
        "",
        "## Ratios",
        "",
        *(ratios(results) or ["- (no pair of servers completed the same scenario in this run)"]),
        "",
        "## Where each server starts losing messages, and what ran out",
        "",
        *(answer(results) or ["- (no scenario completed)"]),
        "",
    ]
    head, rows = losses(results)
    if rows:
        out += ["Lost deliveries (accepted or unanswered, never delivered to a receiver that stayed joined):", ""]
        out += [md_table(head, rows), ""]
    tg = targets(results)
    if tg:
        out += ["## Kaiwa against its targets (from the benchmark issue)", "", *tg, ""]
    if any(p.name == "bench-latency.png" for p in images):
        out += ["## Plots", "", "![latency percentiles vs offered rate](img/bench-latency.png)", ""]
    if any(p.name == "bench-payload.png" for p in images):
        out += ["![delivered, refused and lost vs payload size](img/bench-payload.png)", ""]
    out += uploadsreport.markdown(results, images)
    out += ["## Tables", ""]
    for title, head, rows in tables(results):
        if rows:
            out += [f"### {title}", "", md_table(head, rows), ""]
    if results["errors"]:
        out += ["## Harness errors in this run", ""]
        out += ["- " + e.splitlines()[0][:400] for e in results["errors"]]
        out += [""]
    out += [
        "## Reproduce",
        "",
        "`make bench` (about 20 minutes on 2 cores) or `make bench-quick` (about a minute). "
        "`python -m bench run --help` lists the options (servers, scenarios). "
        "`python -m bench report bench/results/latest.json` rebuilds this page and the plots from saved results.",
        "",
    ]
    return "\n".join(out)


def _rel(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def write_all(
    results: dict[str, Any], *, doc: bool = True, json_path: Path | None = None
) -> tuple[Path, list[Path], Path | None]:
    """Save the JSON (unless it was loaded from ``json_path``), the plots and the page."""
    json_path = json_path or save_json(results)
    page, img_dir, _ = outputs(results)
    images = plots(results, img_dir)
    if not doc:
        return json_path, images, None
    page.parent.mkdir(parents=True, exist_ok=True)
    page.write_text(markdown(results, images, json_path))
    return json_path, images, page
