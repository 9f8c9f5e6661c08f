"""gateway.dialplan: normalization, routing order, failover lists, and load problems."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest

from gateway.config import load_config
from gateway.dialplan import Decision, DialPlan, parse_template
from gateway.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
TRUNKS = {"carrier-a", "carrier-b", "carrier-c"}


def write(tmp_path: Path, text: str, name: str = "plan.toml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def plan(tmp_path: Path, *texts: str) -> DialPlan:
    files = [write(tmp_path, text, f"plan{i}.toml") for i, text in enumerate(texts)]
    return DialPlan.load(files, TRUNKS)


def problems(tmp_path: Path, text: str, users: set[str] | None = None) -> list[str]:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        DialPlan.load([path], TRUNKS, users)
    return [str(p).replace(str(path), "F", 1) for p in info.value.problems]


PLAN = r"""
[normalize]
rules = [
    { match = '^00(\d+)$', replace = '+\1' },
    { name = "nanp", match = '^(\d{10})$', replace = '+1\1' },
    { match = '^\d{10}$', replace = 'never reached: the rule above matches first' },
]

[[inbound]]
name = "app-numbers"
match = '^\+15550\d{6}$'
from_trunk = "carrier-a"
action = "app"

[[inbound]]
match = '^\+15551\d{6}$'
action = "outbound"

[[inbound]]
match = '^\+15552\d{6}$'
action = "trunk:carrier-c"

[[inbound]]
match = '^100$'
action = "user:alice"

[[inbound]]
name = "bridge"
match = '^800$'
action = "conference:room-1"

[[outbound]]
name = "north-america"
match = '^\+1\d{10}$'
trunks = ["carrier-a", "carrier-b"]

[[outbound]]
match = '^\+44'
trunks = ["carrier-b"]
"""


@pytest.fixture
def default_plan(tmp_path: Path) -> DialPlan:
    return plan(tmp_path, PLAN)


@pytest.mark.parametrize(
    ("dialed", "normalized"),
    [
        ("0044201234567", "+44201234567"),
        ("5551234567", "+15551234567"),
        ("+15551234567", "+15551234567"),  # no rule matches: unchanged
        ("0012", "+12"),  # applied once: "+12" is not normalized again
    ],
)
def test_normalize(default_plan: DialPlan, dialed: str, normalized: str) -> None:
    assert default_plan.normalize(dialed) == normalized


def test_normalize_unanchored_rule_replaces_the_match_only(tmp_path: Path) -> None:
    p = plan(tmp_path, "[normalize]\nrules = [{ match = '-', replace = '' }]\n")
    assert p.normalize("555-1234-5") == "5551234-5"  # first occurrence, like re.sub(count=1)


@pytest.mark.parametrize(
    ("number", "from_trunk", "expected"),
    [
        # inbound rule with from_trunk: applies only to that trunk
        (
            "5550123456",
            "carrier-a",
            Decision("+15550123456", "app", None, (), "app-numbers"),
        ),
        # ... other trunks and users fall through to the outbound routes
        (
            "5550123456",
            "carrier-b",
            Decision("+15550123456", "outbound", None, ("carrier-a", "carrier-b"), "north-america"),
        ),
        (
            "5550123456",
            None,
            Decision("+15550123456", "outbound", None, ("carrier-a", "carrier-b"), "north-america"),
        ),
        # action = "outbound": routed by [[outbound]], failover list in order
        (
            "+15551000000",
            "carrier-a",
            Decision("+15551000000", "outbound", None, ("carrier-a", "carrier-b"), "north-america"),
        ),
        # trunk:NAME
        (
            "5552000000",
            None,
            Decision("+15552000000", "trunk", "carrier-c", ("carrier-c",), "inbound[2]"),
        ),
        ("100", "carrier-b", Decision("100", "user", "alice", (), "inbound[3]")),
        ("800", None, Decision("800", "conference", "room-1", (), "bridge")),
        # unnamed outbound route
        (
            "00447000000000",
            None,
            Decision("+447000000000", "outbound", None, ("carrier-b",), "outbound[1]"),
        ),
        # nothing matches: none (404)
        ("999", "carrier-a", Decision("999", "none")),
    ],
)
def test_route(
    default_plan: DialPlan, number: str, from_trunk: str | None, expected: Decision
) -> None:
    assert default_plan.route(number, from_trunk) == expected


def test_route_outbound_skips_inbound_rules(default_plan: DialPlan) -> None:
    assert default_plan.route_outbound("100") == Decision("100", "none")
    assert default_plan.route_outbound("5550123456").trunks == ("carrier-a", "carrier-b")


def test_inbound_order_is_file_order(tmp_path: Path) -> None:
    p = plan(
        tmp_path,
        """
        [[inbound]]
        name = "first"
        match = '^1'
        action = "app"
        [[inbound]]
        name = "second"
        match = '^12$'
        action = "user:bob"
        """,
    )
    assert p.route("12").rule == "first"


def test_outbound_first_match_wins_and_action_outbound_without_route(tmp_path: Path) -> None:
    p = plan(
        tmp_path,
        """
        [[inbound]]
        match = '^7'
        action = "outbound"
        [[outbound]]
        name = "specific"
        match = '^\\+4420'
        trunks = ["carrier-c"]
        [[outbound]]
        name = "general"
        match = '^\\+44'
        trunks = ["carrier-b", "carrier-a"]
        """,
    )
    assert p.route("+442012345678").trunks == ("carrier-c",)
    assert p.route("+443012345678").trunks == ("carrier-b", "carrier-a")
    assert p.route("7000") == Decision("7000", "none")


def test_files_merge_in_order(tmp_path: Path) -> None:
    p = plan(
        tmp_path,
        """
        [normalize]
        rules = [{ match = '^0(\\d+)$', replace = '+44\\1' }]
        [[outbound]]
        match = '^\\+44'
        trunks = ["carrier-a"]
        """,
        """
        [normalize]
        rules = [{ match = '^0(\\d+)$', replace = 'ignored: first file wins' }]
        [[inbound]]
        match = '^\\+44'
        action = "app"
        [[outbound]]
        name = "catch-all"
        match = '.'
        trunks = ["carrier-b"]
        """,
    )
    assert len(p.normalize_rules) == 2 and len(p.outbound_routes) == 2
    assert p.normalize("0201") == "+44201"
    assert p.route("0201") == Decision("+44201", "app", None, (), "inbound[0]")
    assert p.route_outbound("0201").rule == "outbound[0]"
    assert p.route("123").rule == "catch-all"
    assert p.files == tuple(tmp_path / f"plan{i}.toml" for i in range(2))


def test_decision_json_and_describe() -> None:
    d = Decision("+15551234567", "outbound", None, ("carrier-a", "carrier-b"), "north-america")
    assert d.to_json_dict() == {
        "action": "outbound",
        "trunks": ["carrier-a", "carrier-b"],
        "rule": "north-america",
        "number": "+15551234567",
        "target": None,
    }
    assert d.describe() == "+15551234567 -> outbound via carrier-a, carrier-b (rule north-america)"
    assert Decision("100", "user", "alice", (), "x").describe() == "100 -> user:alice (rule x)"
    assert Decision("1", "app", rule="inbound[0]").describe() == "1 -> app (rule inbound[0])"
    assert Decision("9", "none").describe() == "9 -> none (no route: 404)"


def test_shipped_plans_load(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    config = load_config("conf/gateway.toml")
    default = DialPlan.load(config.dialplan.files, config.trunk_names, config.sip.users.keys())
    assert default.route("5551234567").to_json_dict()["trunks"] == ["carrier-a", "carrier-b"]
    assert default.route("5550123456", "carrier-a").action == "app"
    for example in sorted((REPO / "dialplans/examples").glob("*.toml")):
        DialPlan.load([example], config.trunk_names)
    pbx = DialPlan.load([REPO / "dialplans/examples/pbx.toml"], config.trunk_names)
    assert pbx.route("101") == Decision("101", "user", "alice", (), "ext-alice")
    assert pbx.route("02079461234").action == "app"
    assert pbx.route("02012345678").trunks == ("carrier-b", "carrier-a")
    transit = DialPlan.load([REPO / "dialplans/examples/transit.toml"], config.trunk_names)
    assert transit.route("#99+4930123", "carrier-b").target == "carrier-a"


# --- problems ----------------------------------------------------------------------------------


def test_load_problems_all_reported(tmp_path: Path) -> None:
    assert problems(
        tmp_path,
        """
        routes = []
        [normalize]
        rule = []
        rules = [
            { match = '^(\\d+)$', replace = '+\\2' },
            { match = '(?P<n>\\d)', replace = '\\g<m>' },
            { match = '[0-9', replace = '' },
            { match = 'x', replace = '\\q' },
            { match = 'x' },
            "nope",
        ]
        [[inbound]]
        match = '^1'
        action = "trunk:carrier-z"
        [[inbound]]
        match = '^2'
        from_trunk = "carrier-y"
        action = "app"
        [[inbound]]
        match = '^3'
        action = "voicemail"
        [[inbound]]
        match = '(unclosed'
        action = "user:"
        [[inbound]]
        match = '^4'
        [[inbound]]
        name = "dup"
        match = '^5'
        action = "app"
        actoin = "app"
        [[inbound]]
        name = "dup"
        match = 5
        action = "conference:x y"
        [[outbound]]
        match = '^6'
        trunks = ["carrier-a", "carrier-x", "carrier-a"]
        [[outbound]]
        match = '^7'
        trunks = []
        [[outbound]]
        match = '^8'
        """,
    ) == [
        "F: normalize.rules[5]: expected a table, got string",
        "F: normalize.rules[0].replace: replace refers to group 2 but match has 1 group(s)",
        "F: normalize.rules[1].replace: replace refers to unknown group name 'm'",
        "F: normalize.rules[2].match: bad regex: unterminated character set at position 0",
        "F: normalize.rules[3].replace: replace has bad escape \\q",
        "F: normalize.rules[4].replace: missing required key",
        "F: normalize.rule: unknown key (did you mean 'rules'?)",
        "F: inbound[0].action: unknown trunk 'carrier-z'",
        "F: inbound[1].from_trunk: unknown trunk 'carrier-y'",
        "F: inbound[2].action: unknown action 'voicemail' "
        "(expected app, outbound, trunk:NAME, user:NAME or conference:NAME)",
        "F: inbound[3].match: bad regex: missing ), unterminated subpattern at position 0",
        "F: inbound[3].action: user:NAME needs a name of letters, digits, '.', '_' or '-'",
        "F: inbound[4].action: missing required key",
        "F: inbound[5].actoin: unknown key (did you mean 'action'?)",
        f"F: inbound[6].name: duplicate inbound rule name (also {tmp_path / 'plan.toml'}: "
        "inbound[5])",
        "F: inbound[6].match: expected a string, got integer",
        "F: inbound[6].action: conference:NAME needs a name of letters, digits, '.', '_' or '-'",
        "F: outbound[0].trunks[1]: unknown trunk 'carrier-x'",
        "F: outbound[0].trunks[2]: duplicate trunk 'carrier-a'",
        "F: outbound[1].trunks: must name at least one trunk",
        "F: outbound[2].trunks: missing required key",
        "F: routes: unknown key",
    ]


def test_unknown_user_only_checked_when_users_given(tmp_path: Path) -> None:
    text = "[[inbound]]\nmatch = '1'\naction = 'user:carol'\n"
    assert problems(tmp_path, text, users={"alice"}) == [
        "F: inbound[0].action: unknown user 'carol' (not in [sip] users)"
    ]
    DialPlan.load([tmp_path / "plan.toml"], TRUNKS)


def test_syntax_and_missing_files(tmp_path: Path) -> None:
    bad = write(tmp_path, "[[inbound]\n", "bad.toml")
    with pytest.raises(ConfigError) as info:
        DialPlan.load([bad, tmp_path / "missing.toml"], TRUNKS)
    assert [str(p) for p in info.value.problems] == [
        f"{bad}: (syntax): Expected ']]' at the end of an array declaration (at line 1, column 10)",
        f"{tmp_path / 'missing.toml'}: (file): cannot read: No such file or directory",
    ]


@pytest.mark.parametrize(
    ("pattern", "template", "subject"),
    [
        (r"^(\d)(\d)$", r"\2\1", "12"),
        (r"^(\d+)$", r"+\g<1>0", "4412"),
        (r"^(?P<cc>\d)(?P<n>\d+)$", r"\g<n>-\g<cc>", "4412"),
        (r"^(\d)$", r"\101", "7"),  # octal escape: chr(0o101) == "A"
        ("^" + r"(\d)" * 12 + "$", r"\12\11", "123456789012"),  # two-digit group numbers
        (r"^(\d)(x)?$", r"[\2]\t\\\0\07\-", "7"),  # unmatched group, escapes, "\-" kept
        (r"^\d$", r"\g<0>\g<0>", "7"),
    ],
)
def test_template_matches_re_sub(pattern: str, template: str, subject: str) -> None:
    compiled = re.compile(pattern)
    parts = parse_template(template, compiled)
    m = compiled.search(subject)
    assert m is not None
    ours = "".join(p if isinstance(p, str) else (m.group(p) or "") for p in parts)
    assert ours == compiled.sub(template, subject)


def test_route_compiles_nothing(default_plan: DialPlan, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("re.compile on the routing path")

    monkeypatch.setattr(re, "compile", refuse)
    monkeypatch.setattr(re, "search", refuse)
    assert default_plan.route("5551234567", "carrier-a").action == "outbound"
