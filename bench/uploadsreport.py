"""The phone-photo experiment's tables, plot and answer in the report (bench/uploads.py's results)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _kaiwa(results: dict[str, Any]) -> dict[str, Any] | None:
    entry = results["scenarios"].get("uploads", {}).get("kaiwa")
    return entry.get("result") if entry and "result" in entry else None


def _channels(results: dict[str, Any]) -> dict[str, Any] | None:
    entry = results["scenarios"].get("uploads", {}).get("channels")
    return entry.get("result") if entry and "result" in entry else None


def _v(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.1f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def _refusals(statuses: dict[str, int]) -> str:
    other = {k: v for k, v in statuses.items() if k != "201"}
    return ", ".join(f"{k}: {v}" for k, v in sorted(other.items())) or "none"


def tables(results: dict[str, Any]) -> list[tuple[str, list[str], list[list[str]]]]:
    out: list[tuple[str, list[str], list[list[str]]]] = []
    errors = {k: e["error"] for k, e in results["scenarios"].get("uploads", {}).items() if "error" in e}
    k = _kaiwa(results)
    if k is not None or "kaiwa" in errors:
        head = [
            "photo", "MB", "users", "uploads/s", "MB/s", "upload p50 ms", "upload p99 ms",
            "thumbnail p50 ms", "thumbnail p99 ms", "refused", "chat p99 ms", "chat lost",
            "server memory MB", "server CPU %",
        ]  # fmt: skip
        rows: list[list[str]] = []
        if k is None:
            rows.append(["error: " + errors["kaiwa"][:80], *["-"] * (len(head) - 1)])
        else:
            alone = k["chat_alone"]
            rows.append(
                ["(chat alone)", "-", "0", *["-"] * 7, _v(alone["chat_p99_ms"]), _v(alone["chat_lost"]), "-", "-"]
            )
            for s in k["steps"]:
                rows.append(
                    [
                        s["photo"], _v(s["photo_mb"]), _v(s["users"]), _v(s["uploads_per_s"]), _v(s["mb_per_s"]),
                        _v(s["upload_p50_ms"]), _v(s["upload_p99_ms"]), _v(s["thumbnail_p50_ms"]),
                        _v(s["thumbnail_p99_ms"]), _refusals(s["statuses"]), _v(s["chat_p99_ms"]),
                        _v(s["chat_lost"]), _v(s["server_rss_max_mb"]), _v(s["server_cpu_percent"]),
                    ]
                )  # fmt: skip
        out.append(("Phone photos uploaded over HTTP while a room of 100 chats at 20 messages/s (Kaiwa)", head, rows))
    c = _channels(results)
    if c is not None or "channels" in errors:
        head = [
            "photo MB", "frame MB (base64)", "receivers", "delivered", "sender's answer", "sender closed",
            "receivers closed", "seconds", "server memory MB", "Redis memory MB",
        ]  # fmt: skip
        rows = []
        if c is None:
            rows.append(["error: " + errors["channels"][:80], *["-"] * (len(head) - 1)])
        else:
            for f in c["base64_frames"]:
                rows.append(
                    [
                        _v(f["photo_mb"]), _v(f["frame_mb"]), _v(f["receivers"]), _v(f["delivered"]),
                        _v(f["answer"]), _v(f["sender_closed"]), _v(len(f["receivers_closed"])), _v(f["seconds"]),
                        _v(f["server_rss_max_mb"]), _v(f["redis_rss_max_mb"]),
                    ]
                )  # fmt: skip
        out.append(("The same photo as base64 in one WebSocket frame (Django Channels)", head, rows))
    return out


def answer(results: dict[str, Any]) -> list[str]:
    """Plain-language lines: where uploads are refused or slow, and what runs out."""
    k = _kaiwa(results)
    lines: list[str] = []
    if k is not None and k["steps"]:
        steps = k["steps"]
        best = max(steps, key=lambda s: s["mb_per_s"])
        lost = sum(s["chat_lost"] for s in steps)
        chat_p99 = max((s["chat_p99_ms"] or 0) for s in steps)
        refused = {code for s in steps for code in s["statuses"] if code != "201"}
        lines.append(
            f"- Kaiwa stored up to {best['uploads_per_s']} photos/s ({best['mb_per_s']} MB/s, {best['photo']}, "
            f"{best['users']} users); the chat beside it lost {lost} deliveries and its p99 stayed at or under "
            f"{chat_p99:.0f} ms (alone: {k['chat_alone']['chat_p99_ms']} ms)."
        )
        one = {s["photo"]: s for s in steps if s["users"] == 1}
        slow = [
            s
            for s in steps
            if s["users"] > 1
            and s["photo"] in one
            and (s["thumbnail_p50_ms"] or 0) > 3 * (one[s["photo"]]["thumbnail_p50_ms"] or 1)
        ]
        if slow:
            s = min(slow, key=lambda s: s["users"])
            alone_ms = one[s["photo"]]["thumbnail_p50_ms"]
            busy = s.get("server_cores_busy_mean") or 0
            cause = (
                f"CPU runs out: the server's cores were {busy:.0f}% busy (Kaiwa's processes and anything else on "
                "them); the image workers (KAIWA_IMAGE_WORKERS processes at nice 10) get what the chat leaves, so "
                f"each upload waits its turn; memory stayed at {s['server_rss_max_mb']} MB (bodies are streamed to "
                "disk, never held whole)."
            )
            lines.append(
                f"- Uploads get slow, not refused: at {s['users']} users the picture work takes "
                f"{s['thumbnail_p50_ms']:.0f} ms p50 ({s['photo']}) against {alone_ms:.0f} ms alone, "
                f"while the server's processes use {s['server_cpu_percent'] or 0:.0f}% CPU: {cause}"
            )
        if k.get("skipped"):
            lines.append(f"- Skipped for the scenario's time budget: {', '.join(k['skipped'])}.")
        first = k["first_refusal_one_user"]
        if first["status"] == "429":
            budget = (
                f"one user uploading back to back is refused with 429 after {first['accepted_before_refusal']} "
                "uploads (the per-user budget, KAIWA_UPLOAD_RATE_BURST / KAIWA_UPLOAD_RATE_PER_MINUTE)"
            )
        else:
            # Not the budget: say what the probe met instead of dressing it up as the budget's answer.
            budget = (
                f"the per-user budget was not measured: one user uploading back to back got {first['status']} "
                f"after {first['accepted_before_refusal']} uploads"
            )
        if "waited_for_idle_s" in first:
            budget += f", once the server had been idle again ({first['waited_for_idle_s']} s after the last step)"
        lines.append(
            "- Answers other than 201 in the steps: "
            + (", ".join(sorted(refused)) + " ('timeout': no answer within 120 s)" if refused else "none")
            + f"; {budget}; a file over KAIWA_MAX_UPLOAD_BYTES is 413."
        )
    c = _channels(results)
    if c is not None:
        for i, f in enumerate(c["base64_frames"]):
            if f["sender_closed"] is not None or f["delivered"] < f["receivers"]:
                line = (
                    f"- Channels breaks at the {f['photo_mb']} MB photo ({f['frame_mb']} MB of base64): delivered to "
                    f"{f['delivered']} of {f['receivers']}, the sender's socket closed with {f['sender_closed']} "
                    f"(uvicorn's --ws-max-size, 16 MiB by default), {len(f['receivers_closed'])} receivers closed."
                )
                if i > 0:
                    prev = c["base64_frames"][i - 1]
                    line += (
                        f" Before that, the {prev['photo_mb']} MB photo reached {prev['delivered']} of "
                        f"{prev['receivers']} receivers in {prev['seconds']} s with the server at "
                        f"{prev['server_rss_max_mb']} MB: each receiver's copy of the frame is built and queued "
                        "in the server's memory (not measured here: what it does to chat messages sent meanwhile)."
                    )
                lines.append(line)
                break
        else:
            worst = max(c["base64_frames"], key=lambda f: f["server_rss_max_mb"] or 0)
            lines.append(
                f"- Channels delivered every base64 photo here (up to {worst['frame_mb']} MB frames to "
                f"{worst['receivers']} receivers, {worst['seconds']} s, server memory {worst['server_rss_max_mb']} MB, "
                f"Redis {worst['redis_rss_max_mb']} MB): every receiver gets the whole photo before any message "
                "behind it; uvicorn's default --ws-max-size (16 MiB) refuses frames of photos over about 12.5 MB "
                "(not reached in this run)."
            )
    return lines


def plots(results: dict[str, Any], img_dir: Path) -> list[Path]:
    k = _kaiwa(results)
    if k is None or not k["steps"]:
        return []
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(14, 4.8))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, name in enumerate(dict.fromkeys(s["photo"] for s in k["steps"])):
        colour = colours[i % len(colours)]
        steps = sorted((s for s in k["steps"] if s["photo"] == name), key=lambda s: s["users"])
        users = [s["users"] for s in steps]
        left.plot(users, [s["mb_per_s"] for s in steps], marker="o", color=colour, label=name)
        work = [s["thumbnail_p99_ms"] or float("nan") for s in steps]
        chat = [s["chat_p99_ms"] or float("nan") for s in steps]
        right.plot(users, work, marker="o", color=colour, label=f"{name}: picture work p99")
        right.plot(users, chat, ":", marker="x", color=colour, label=f"{name}: chat p99")
    left.set_xlabel("concurrent uploaders")
    left.set_ylabel("MB/s stored")
    left.set_title("upload throughput", fontsize=10)
    right.set_xlabel("concurrent uploaders")
    right.set_ylabel("ms")
    right.set_yscale("log")
    right.set_title("picture work p99 (thumbnail, clean copy, store) and the chat's p99", fontsize=10)
    alone = k["chat_alone"]["chat_p99_ms"]
    if alone:
        right.axhline(alone, color="grey", linewidth=0.8, linestyle="-.", label="chat p99 alone")
    ticks = sorted({s["users"] for s in k["steps"]})
    for ax in (left, right):
        ax.set_xscale("log")
        ax.set_xticks(ticks, [str(t) for t in ticks])
        ax.minorticks_off()
        ax.grid(True, which="both", alpha=0.3)
    left.legend(fontsize=7)
    right.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    path = img_dir / "bench-uploads.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return [path]


def markdown(results: dict[str, Any], images: list[Path]) -> list[str]:
    lines = answer(results)
    if not lines:
        return []
    out = ["## Phone photos: uploads beside the chat, and Channels' base64 frames", "", *lines, ""]
    if any(p.name == "bench-uploads.png" for p in images):
        out += ["![upload throughput, picture work and chat p99 vs concurrent uploaders](img/bench-uploads.png)", ""]
    return out
