"""gateway.cli and gateway.rest.keys: commands, exit codes, output, the REST access key."""

from __future__ import annotations

import base64
import json
import os
import shutil
import stat
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import pytest

from gateway.cli import main
from gateway.config import Config, load_config
from gateway.errors import ConfigError, Problem
from gateway.rest.keys import ACCESS_KEY_FILE, access_key, connection_string

REPO = Path(__file__).resolve().parents[2]

CONFIG = """
[rest]
listen = "{listen}"
access_key = "{key}"

[dialplan]
files = ["plan.toml"]

[[trunk]]
name = "carrier-a"
uri = "sip:127.0.0.1:5070"
inbound_from = ["127.0.0.1/32"]

[[trunk]]
name = "carrier-b"
uri = "sip:127.0.0.1:5080"
"""

PLAN = r"""
[normalize]
rules = [{ match = '^(\d{10})$', replace = '+1\1' }]

[[inbound]]
name = "app-numbers"
match = '^\+15550\d{6}$'
from_trunk = "carrier-a"
action = "app"

[[outbound]]
name = "north-america"
match = '^\+1\d{10}$'
trunks = ["carrier-a", "carrier-b"]
"""


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A directory holding gw.toml and plan.toml, made the cwd (var/ goes there)."""
    monkeypatch.chdir(tmp_path)
    write_config(tmp_path)
    (tmp_path / "plan.toml").write_text(PLAN)
    return tmp_path


def write_config(directory: Path, listen: str = "127.0.0.1:8443", key: str = "") -> Path:
    path = directory / "gw.toml"
    path.write_text(CONFIG.format(listen=listen, key=key))
    return path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


# --- check -------------------------------------------------------------------------------------


def test_check_ok(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "check", "-c", "gw.toml") == (
        0,
        "ok: 2 trunks, 1 inbound rules, 1 outbound routes\n",
        "",
    )


def test_check_config_problems(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (workdir / "gw.toml").write_text('[sip]\nmax_calls = 0\nlisen = 1\n[[trunk]]\nname = "x"\n')
    code, out, err = run(capsys, "check", "--config", "gw.toml")
    assert (code, out) == (2, "")
    assert err.splitlines() == [
        "gw.toml: sip.max_calls: must be at least 1",
        "gw.toml: sip.lisen: unknown key (did you mean 'listen'?)",
        "gw.toml: trunk[0].uri: missing required key",
    ]


def test_check_dialplan_problems(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (workdir / "plan.toml").write_text(
        "[[outbound]]\nmatch = '('\ntrunks = ['carrier-z']\n"
        "[[inbound]]\nmatch = '1'\naction = 'user:nobody'\n"
    )
    code, out, err = run(capsys, "check", "-c", "gw.toml")
    plan = workdir / "plan.toml"
    assert (code, out) == (2, "")
    assert err.splitlines() == [
        f"{plan}: inbound[0].action: unknown user 'nobody' (not in [sip] users)",
        f"{plan}: outbound[0].match: bad regex: missing ), unterminated subpattern at position 0",
        f"{plan}: outbound[0].trunks[0]: unknown trunk 'carrier-z'",
    ]


def test_check_missing_config(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "check", "-c", "nope.toml") == (
        2,
        "",
        "nope.toml: (file): cannot read: No such file or directory\n",
    )


def test_default_config_path_is_the_shipped_one(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(REPO)
    assert run(capsys, "check") == (0, "ok: 2 trunks, 1 inbound rules, 1 outbound routes\n", "")


# --- route -------------------------------------------------------------------------------------


def test_route_human(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "route", "-c", "gw.toml", "5551234567") == (
        0,
        "+15551234567 -> outbound via carrier-a, carrier-b (rule north-america)\n",
        "",
    )
    assert run(capsys, "route", "-c", "gw.toml", "--from", "carrier-a", "5550123456") == (
        0,
        "+15550123456 -> app (rule app-numbers)\n",
        "",
    )
    assert run(capsys, "route", "-c", "gw.toml", "123")[1] == "123 -> none (no route: 404)\n"


def test_route_json(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "route", "-c", "gw.toml", "--json", "5551234567")
    assert (code, err) == (0, "")
    assert json.loads(out) == {
        "action": "outbound",
        "trunks": ["carrier-a", "carrier-b"],
        "rule": "north-america",
        "number": "+15551234567",
        "target": None,
    }
    code, out, _ = run(
        capsys, "route", "-c", "gw.toml", "--json", "--from", "carrier-a", "+15550999999"
    )
    assert json.loads(out)["action"] == "app"
    assert json.loads(run(capsys, "route", "-c", "gw.toml", "--json", "1")[1]) == {
        "action": "none",
        "trunks": [],
        "rule": None,
        "number": "1",
        "target": None,
    }


def test_route_unknown_trunk(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "route", "-c", "gw.toml", "--from", "carrier-z", "1") == (
        2,
        "",
        "acs-gateway route: unknown trunk 'carrier-z' (carrier-a, carrier-b)\n",
    )


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in ([], ["route"], ["frobnicate"]):
        with pytest.raises(SystemExit) as info:
            main(argv)
        assert info.value.code == 2
    capsys.readouterr()


# --- run ---------------------------------------------------------------------------------------


def test_run_hands_the_config_to_the_app(
    workdir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    seen: list[Config] = []

    def run_gateway(config: Config) -> int:
        seen.append(config)
        return 7

    app = types.ModuleType("gateway.app")
    setattr(app, "run_gateway", run_gateway)  # noqa: B010 - a module attribute mypy can't see
    monkeypatch.setitem(sys.modules, "gateway.app", app)
    assert run(capsys, "run", "-c", "gw.toml")[0] == 7
    assert [t.name for t in seen[0].trunks] == ["carrier-a", "carrier-b"]

    def failing(config: Config) -> int:
        raise ConfigError([Problem("plan.toml", "inbound[0].match", "bad regex: x")])

    setattr(app, "run_gateway", failing)  # noqa: B010
    code, _, err = run(capsys, "run", "-c", "gw.toml")
    assert (code, err) == (2, "plan.toml: inbound[0].match: bad regex: x\n")


def test_run_bad_config_exits_2(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (workdir / "gw.toml").write_text("[sip\n")
    code, _, err = run(capsys, "run", "-c", "gw.toml")
    assert code == 2
    assert err.startswith("gw.toml: (syntax): ")


# --- connection-string and the access key ------------------------------------------------------


def test_connection_string_generates_key_once(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, "connection-string", "-c", "gw.toml")
    assert (code, err) == (0, "")
    key_file = workdir / ACCESS_KEY_FILE
    key = key_file.read_text().strip()
    assert out == f"endpoint=https://127.0.0.1:8443/;accesskey={key}\n"
    assert len(base64.b64decode(key, validate=True)) == 32
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert run(capsys, "connection-string", "-c", "gw.toml")[1] == out  # reused, not replaced
    assert [p.name for p in key_file.parent.iterdir()] == ["rest_access_key"]  # no temp files


def test_configured_key_wins(workdir: Path) -> None:
    config = load_config(write_config(workdir, listen="[::1]:9443", key="c2VjcmV0"))
    assert access_key(config) == "c2VjcmV0"
    assert connection_string(config) == "endpoint=https://[::1]:9443/;accesskey=c2VjcmV0"
    assert not (workdir / "var").exists()


@pytest.mark.parametrize(
    ("listen", "endpoint"), [("0.0.0.0:443", "127.0.0.1:443"), ("[::]:443", "[::1]:443")]
)
def test_unspecified_listen_becomes_loopback(workdir: Path, listen: str, endpoint: str) -> None:
    config = load_config(write_config(workdir, listen=listen, key="c2VjcmV0"))
    assert connection_string(config).startswith(f"endpoint=https://{endpoint}/;")


def test_corrupt_key_file(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (workdir / "var").mkdir()
    (workdir / ACCESS_KEY_FILE).write_text("not base64!\n")
    assert run(capsys, "connection-string", "-c", "gw.toml") == (
        2,
        "",
        f"{workdir / ACCESS_KEY_FILE}: (file): not a base64 access key "
        "(delete it to generate a new one)\n",
    )


def test_bad_configured_key(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_config(workdir, key="%%%")
    code, _, err = run(capsys, "connection-string", "-c", "gw.toml")
    assert (code, err) == (2, "gw.toml: rest.access_key: not valid base64\n")


# --- the console script ------------------------------------------------------------------------


def test_console_script(tmp_path: Path) -> None:
    script = REPO / ".venv/bin/acs-gateway"
    if not script.exists():
        found = shutil.which("acs-gateway")
        if found is None:
            pytest.skip("acs-gateway is not installed (run `make venv`)")
        script = Path(found)
    done = subprocess.run(
        [str(script), "check", "-c", "conf/gateway.toml"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
        check=False,
    )
    assert (done.returncode, done.stdout, done.stderr) == (
        0,
        "ok: 2 trunks, 1 inbound rules, 1 outbound routes\n",
        "",
    )
    bad = tmp_path / "bad.toml"
    bad.write_text(textwrap.dedent("[sip]\nt1 = -1\n"))
    done = subprocess.run(
        [str(script), "check", "-c", str(bad)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (done.returncode, done.stderr) == (2, f"{bad}: sip.t1: must be greater than 0\n")


# --- cdr ---------------------------------------------------------------------------------------


def test_cdr_lists_the_newest_calls(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from gateway.store.cdr import CdrStore

    db = workdir / "var/cdr.sqlite3"  # the default [storage] cdr, relative to the cwd
    assert run(capsys, "cdr", "-c", "gw.toml") == (0, f"no CDRs yet: {db}\n", "")
    assert not db.parent.exists()  # read-only: nothing created

    store = CdrStore(db)
    store.call_started("c-answered", "+15551230001", "+15559870001", "carrier-a", 1700000000.4)
    store.leg_started("c-answered", "a", "in", "carrier-a", "sip:a@10.0.0.1", 1700000000.4, "x")
    store.call_answered("c-answered", 1700000002.0, "carrier-b")
    store.call_ended("c-answered", 1700000063.5, 200, "caller", "BYE")
    store.call_started("c-busy", "alice", "+15559870002", None, 1700000100.0)
    store.call_ended("c-busy", 1700000101.0, 486, "callee", "Busy Here")
    store.close()

    assert run(capsys, "cdr", "-c", "gw.toml") == (
        0,
        "STARTED               CALL-ID     CALLER        CALLEE        TRUNKS                  "
        "STATUS  DURATION  RELEASE  REASON\n"
        "2023-11-14T22:15:00Z  c-busy      alice         +15559870002  - -> -                  "
        "486     0.0       callee   Busy Here\n"
        "2023-11-14T22:13:20Z  c-answered  +15551230001  +15559870001  carrier-a -> carrier-b  "
        "200     61.5      caller   BYE\n",
        "",
    )
    code, out, err = run(capsys, "cdr", "-c", "gw.toml", "--last", "1", "--json")
    assert (code, err) == (0, "")
    (call,) = json.loads(out)
    assert (call["call_id"], call["status"], call["legs"]) == ("c-busy", 486, [])
    assert (
        json.loads(run(capsys, "cdr", "-c", "gw.toml", "--json")[1])[1]["legs"][0]["leg_id"] == "a"
    )

    db.write_bytes(b"not a database" * 100)
    code, out, err = run(capsys, "cdr", "-c", "gw.toml")
    assert (code, out) == (2, "")
    assert err == f"{db}: (file): cannot read CDRs: file is not a database\n"
    with pytest.raises(SystemExit) as info:
        main(["cdr", "-c", "gw.toml", "--last", "0"])
    assert info.value.code == 2
    capsys.readouterr()


# --- calls -------------------------------------------------------------------------------------
def test_calls_prints_live_media_from_calls_json(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = workdir / "var/calls.json"  # beside the default [storage] cdr
    assert run(capsys, "calls", "-c", "gw.toml") == (
        0, f"no call state (is the gateway running, anchoring?) yet: {path}\n", "")
    path.parent.mkdir(parents=True)
    leg = {"codec": "PCMU", "packets_in": 500, "packets_out": 498, "lost": 2, "jitter_ms": 1.5,
           "rtt_ms": 0.4, "mos": 4.38, "srtp": None}
    doc = {"time": 1795491377.0, "calls": {"c1": {"mode": "relay", "legs": {"a": leg}}}}
    path.write_text(json.dumps(doc))
    code, out, _ = run(capsys, "calls", "-c", "gw.toml")
    assert code == 0
    assert out.splitlines() == [
        "as of 2026-11-24T03:36:17Z: 1 calls with media",
        "c1 a relay     PCMU  in 500 out 498 lost 2 jitter 1.5 ms rtt 0.4 ms MOS 4.38 RTP",
    ]
    assert json.loads(run(capsys, "calls", "-c", "gw.toml", "--json")[1]) == doc
