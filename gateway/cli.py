"""The `acs-gateway` command: run, check, route, connection-string, cdr.

Exit codes: 0 success; 2 a configuration or dial plan problem (one "FILE: KEY: reason" line per
problem on stderr) or bad usage.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from gateway.config import Config, load_config
from gateway.dialplan import DialPlan
from gateway.errors import ConfigError, Problem
from gateway.store.cdr import CdrStore

__all__ = ["main"]

DEFAULT_CONFIG = "conf/gateway.toml"
EXIT_PROBLEM = 2
_CDR_HEADINGS = (
    "STARTED",
    "CALL-ID",
    "CALLER",
    "CALLEE",
    "TRUNKS",
    "STATUS",
    "DURATION",
    "RELEASE",
    "REASON",
)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line `argv` (default sys.argv[1:]); return the exit code."""
    args = _parser().parse_args(argv)
    try:
        code: int = args.handler(args)
    except ConfigError as exc:
        _print_problems(exc.problems)
        return EXIT_PROBLEM
    return code


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="acs-gateway", description="SIP/RTP gateway with an ACS Call Automation REST API."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.add_argument(
            "-c",
            "--config",
            default=DEFAULT_CONFIG,
            metavar="FILE",
            help=f"configuration file (default {DEFAULT_CONFIG})",
        )
        return sub

    command("run", "run the gateway in the foreground").set_defaults(handler=_run)
    command("check", "validate the configuration and its dial plans").set_defaults(handler=_check)
    route = command("route", "print the dial plan's decision for a called number")
    route.add_argument("--from", dest="from_trunk", metavar="TRUNK", help="the source trunk")
    route.add_argument("--json", action="store_true", help="print the decision as JSON")
    route.add_argument("number", metavar="NUMBER", help="the called number, as dialed")
    route.set_defaults(handler=_route)
    command("connection-string", "print the connection string the ACS SDK takes").set_defaults(
        handler=_connection_string
    )
    cdr = command("cdr", "print the newest call detail records, newest first")
    cdr.add_argument(
        "--last", type=_positive_int, default=20, metavar="N", help="how many calls (default 20)"
    )
    cdr.add_argument("--json", action="store_true", help="print the calls and their legs as JSON")
    cdr.set_defaults(handler=_cdr)
    trunks = command("trunks", "print each trunk's state as the running gateway last wrote it")
    trunks.add_argument("--json", action="store_true", help="print the state file as JSON")
    trunks.set_defaults(handler=_trunks)
    calls = command("calls", "print the media of calls in progress (codec, packets, loss, MOS)")
    calls.add_argument("--json", action="store_true", help="print the calls file as JSON")
    calls.set_defaults(handler=_calls)
    return parser


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"not a positive integer: {text!r}")
    return value


def _run(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    from gateway.app import run_gateway  # type: ignore[import-not-found, unused-ignore]

    code = run_gateway(config)
    return code if isinstance(code, int) else 0


def _check(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    plan = _load_plan(config)
    print(
        f"ok: {len(config.trunks)} trunks, {len(plan.inbound_rules)} inbound rules, "
        f"{len(plan.outbound_routes)} outbound routes"
    )
    return 0


def _route(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    plan = _load_plan(config)
    if args.from_trunk is not None and config.trunk(args.from_trunk) is None:
        known = ", ".join(sorted(config.trunk_names)) or "none configured"
        print(f"acs-gateway route: unknown trunk {args.from_trunk!r} ({known})", file=sys.stderr)
        return EXIT_PROBLEM
    decision = plan.route(args.number.strip(), args.from_trunk)
    if args.json:
        print(json.dumps(decision.to_json_dict()))
    else:
        print(decision.describe())
    return 0


def _connection_string(args: argparse.Namespace) -> int:
    from gateway.rest.keys import connection_string

    print(connection_string(load_config(args.config)))
    return 0


def _cdr(args: argparse.Namespace) -> int:
    path = load_config(args.config).storage.cdr
    if not path.exists():
        print(f"no CDRs yet: {path}")
        return 0
    try:
        store = CdrStore(path, read_only=True)  # SQLite mode=ro: never creates or writes
        try:
            calls = store.last(args.last)
        finally:
            store.close()
    except sqlite3.Error as exc:
        raise ConfigError([Problem(str(path), "(file)", f"cannot read CDRs: {exc}")]) from exc
    if args.json:
        print(json.dumps(calls))
        return 0
    rows = [_CDR_HEADINGS, *(_cdr_cells(call) for call in calls)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(_CDR_HEADINGS) - 1)]
    for row in rows:  # every column padded but the last (the reason)
        print(
            "  ".join([*(cell.ljust(width) for cell, width in zip(row, widths)), row[-1]]).rstrip()
        )
    return 0


def _trunks(args: argparse.Namespace) -> int:
    """The trunk state file (trunks.json beside the CDR database), kept by `run`."""
    doc = _state_file(args, "trunks.json", "trunk state (is the gateway running?)")
    if doc is None:
        return 0
    print(f"as of {_stamp(doc)}")
    for trunk in doc["trunks"]:
        probe = "probed" if trunk["probing"] else "not probed"
        last = trunk["last_status"] if trunk["last_status"] is not None else "-"
        reg = trunk.get("registration")
        registered = "" if not reg else (
            f"  registration {reg['state']} ({reg['last_status'] or '-'})"
        )
        print(
            f"{trunk['name']:<16} {trunk['state']:<5} {probe:<10} last OPTIONS {last!s:<4} "
            f"calls {trunk['active_calls']} (max {trunk['max_calls'] or '-'}), "
            f"refused {trunk['refused']}  {trunk['uri']}{registered}"
        )
    return 0


def _calls(args: argparse.Namespace) -> int:
    """Live media per call (calls.json beside the CDR database, written with trunks.json)."""
    doc = _state_file(args, "calls.json", "call state (is the gateway running, anchoring?)")
    if doc is None:
        return 0
    print(f"as of {_stamp(doc)}: {len(doc['calls'])} calls with media")
    for call_id, call in sorted(doc["calls"].items()):
        for leg, q in sorted(call["legs"].items()):
            print(
                f"{call_id} {leg} {call['mode']:<9} {_cell(q.get('codec')):<5} "
                f"in {q.get('packets_in', 0)} out {q.get('packets_out', 0)} "
                f"lost {q.get('lost', 0)} jitter {_cell(q.get('jitter_ms'))} ms "
                f"rtt {_cell(q.get('rtt_ms'))} ms MOS {_cell(q.get('mos'))} "
                f"{q.get('srtp') or 'RTP'}"
            )
    return 0


def _state_file(args: argparse.Namespace, name: str, what: str) -> dict[str, Any] | None:
    """A state file the running gateway keeps beside the CDR database; None when it was
    printed as JSON (``--json``) or does not exist yet (said so)."""
    config = load_config(args.config)
    path = config.storage.cdr.parent / name
    try:
        doc: dict[str, Any] = json.loads(path.read_text())
    except FileNotFoundError:
        print(f"no {what} yet: {path}")
        return None
    except (OSError, ValueError) as exc:
        raise ConfigError([Problem(str(path), "(file)", f"cannot read: {exc}")]) from exc
    if args.json:
        print(json.dumps(doc))
        return None
    return doc


def _stamp(doc: dict[str, Any]) -> str:
    return datetime.fromtimestamp(float(doc["time"]), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _cdr_cells(call: dict[str, object]) -> tuple[str, ...]:
    """One line of the `cdr` table: started as UTC ISO 8601 to the second, duration in seconds."""
    started, duration = call["started"], call["duration"]
    return (
        datetime.fromtimestamp(started, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        if isinstance(started, int | float)
        else "-",
        _cell(call["call_id"]),
        _cell(call["caller"]),
        _cell(call["callee"]),
        f"{_cell(call['trunk_in'])} -> {_cell(call['trunk_out'])}",
        _cell(call["status"]),
        f"{duration:.1f}" if isinstance(duration, int | float) else "-",
        _cell(call["release_side"]),
        _cell(call["reason"]),
    )


def _cell(value: object) -> str:
    return "-" if value is None else str(value)


def _load_plan(config: Config) -> DialPlan:
    return DialPlan.load(config.dialplan.files, config.trunk_names, config.sip.users.keys())


def _print_problems(problems: Sequence[Problem]) -> None:
    for problem in problems:
        print(problem, file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
