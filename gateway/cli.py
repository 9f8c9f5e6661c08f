"""The `acs-gateway` command: run, check, route, connection-string.

Exit codes: 0 success; 2 a configuration or dial plan problem (one "FILE: KEY: reason" line per
problem on stderr) or bad usage.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from gateway.config import Config, load_config
from gateway.dialplan import DialPlan
from gateway.errors import ConfigError, Problem

__all__ = ["main"]

DEFAULT_CONFIG = "conf/gateway.toml"
EXIT_PROBLEM = 2


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
    return parser


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


def _load_plan(config: Config) -> DialPlan:
    return DialPlan.load(config.dialplan.files, config.trunk_names, config.sip.users.keys())


def _print_problems(problems: Sequence[Problem]) -> None:
    for problem in problems:
        print(problem, file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
