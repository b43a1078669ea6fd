"""``python -m bench run --quick|--full`` and ``python -m bench report <results.json>``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ALL_SERVERS = ["echo", "relay", "channels", "kaiwa", "kaiwa-websockets", "kaiwa-wsproto"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description="Kaiwa vs Django Channels benchmarks.")
    sub = parser.add_subparsers(dest="cmd", required=True)
    run = sub.add_parser("run", help="start the servers, run the scenarios, write results, plots and the report")
    size = run.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="about a minute: small sizes, short steps (CI)")
    size.add_argument("--full", action="store_true", help="the full run (default; about 20 minutes on 2 cores)")
    run.add_argument(
        "--servers", default=",".join(ALL_SERVERS), help=f"comma-separated, from {','.join(ALL_SERVERS)} (default: all)"
    )
    run.add_argument(
        "--scenarios",
        default="",
        help="comma-separated subset (default: all) of calibration, idle, storm, restart, fanout, many_rooms, slow, "
        "payload_default, payload_large, slow_large, persist_sqlite, persist_postgres",
    )
    run.add_argument(
        "--no-doc",
        action="store_true",
        help="do not write the report page (results and plots are still written). A full run writes "
        "docs/performance.md and docs/img/; a quick run writes them under bench/results/quick/",
    )
    rep = sub.add_parser("report", help="rebuild docs/performance.md and the plots from a results file")
    rep.add_argument("results", type=Path, nargs="?", default=Path("bench/results/latest.json"))
    args = parser.parse_args(argv)

    if args.cmd == "report":
        import json

        from bench import report

        results = json.loads(args.results.read_text())
        report.print_tables(results)
        _, _, page = report.write_all(results, json_path=args.results.resolve())
        print(f"\nwrote {page}", file=sys.stderr)
        return 0

    from bench import report, runner
    from bench.scenarios import Config

    servers = [s.strip() for s in args.servers.split(",") if s.strip()]
    unknown = [s for s in servers if s not in ALL_SERVERS]
    if unknown:
        parser.error(f"unknown server(s) {unknown}; choose from {ALL_SERVERS}")
    only = {s.strip() for s in args.scenarios.split(",") if s.strip()} or None
    if only and only - set(runner.SCENARIOS):
        parser.error(
            f"unknown scenario(s) {sorted(only - set(runner.SCENARIOS))}; choose from {sorted(runner.SCENARIOS)}"
        )
    cfg = Config.quick() if args.quick else Config.full()

    try:
        import uvloop

        results = uvloop.run(runner.run(cfg, servers, only))
    except ImportError:
        import asyncio

        results = asyncio.run(runner.run(cfg, servers, only))
    report.print_tables(results)
    json_path, images, page = report.write_all(results, doc=not args.no_doc)
    print(f"\nresults: {json_path}", file=sys.stderr)
    for img in images:
        print(f"plot: {img}", file=sys.stderr)
    if page is not None:
        print(f"report: {page}", file=sys.stderr)
    if results["errors"]:
        print(f"\nthe bench itself failed {len(results['errors'])} time(s): see the errors above", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
