"""Dial plans: TOML files of [normalize] rules, [[inbound]] rules and [[outbound]] routes.

Invariants:
- A loaded DialPlan is immutable and fully checked: every regex compiled, every trunk name known,
  every action parsed, every replace template parsed against its regex's groups. Loading either
  succeeds or raises ConfigError listing every problem (file, key, reason).
- `route()` and `normalize()` are on the call-setup hot path: they compile nothing and allocate
  little; inbound rules are pre-filtered per source trunk at load time.
- Patterns are applied with `re.search`: anchors in the pattern decide whether it must match the
  whole number (every shipped rule is anchored, '^...$'). A normalize rule replaces what its
  pattern matched (like `re.sub(..., count=1)`); `\\1` and `\\g<name>` name groups.

Routing order (DESIGN.md "Contract details"): the called number is normalized (first matching
[normalize] rule, applied once); [[inbound]] rules are tried in file order, skipping those whose
from_trunk is not the source trunk; a matching rule's action decides, except that
action = "outbound", or no inbound rule matching, routes by the first [[outbound]] route whose
pattern matches, giving its trunks in failover order. Nothing matching: action "none" (404).
Several files are merged in the order given, each kind of rule appended after the previous
file's. An unnamed rule is called "inbound[i]" / "outbound[i]", i counting across the merge.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal, TypeAlias

from gateway.errors import ConfigError, Problem
from gateway.tomlread import MISSING, TomlReader, read_toml, type_name

__all__ = [
    "Action",
    "Decision",
    "DialPlan",
    "InboundRule",
    "NormalizeRule",
    "OutboundRoute",
    "parse_template",
]

Action: TypeAlias = Literal["app", "outbound", "trunk", "user", "conference", "none"]
_TARGET_ACTIONS: Final[dict[str, Action]] = {
    "trunk": "trunk",
    "user": "user",
    "conference": "conference",
}
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._~+-]*")
_ACTIONS_HELP: Final = "app, outbound, trunk:NAME, user:NAME or conference:NAME"


@dataclass(frozen=True, slots=True)
class Decision:
    """What to do with a call: the dial plan's answer for one number."""

    number: str  # the called number after normalization
    action: Action
    target: str | None = None  # trunk, user or conference name for those actions
    trunks: tuple[str, ...] = ()  # trunks to try, in order (outbound and trunk actions)
    rule: str | None = None  # deciding rule ("inbound[0]" if unnamed; outbound: the route)

    def to_json_dict(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "trunks": list(self.trunks),
            "rule": self.rule,
            "number": self.number,
            "target": self.target,
        }

    def describe(self) -> str:
        """One line for people: "+15551234567 -> outbound via carrier-a (rule north-america)"."""
        if self.action == "none":
            return f"{self.number} -> none (no route: 404)"
        if self.action == "outbound":
            what = f"outbound via {', '.join(self.trunks)}"
        elif self.target is not None:
            what = f"{self.action}:{self.target}"
        else:
            what = self.action
        return f"{self.number} -> {what} (rule {self.rule})"


@dataclass(frozen=True, slots=True)
class NormalizeRule:
    name: str
    pattern: re.Pattern[str]
    replace: str
    template: tuple[str | int, ...]  # `replace` parsed: literal text and group numbers

    def apply(self, number: str) -> str | None:
        """The rewritten number, or None when the pattern does not match."""
        m = self.pattern.search(number)
        if m is None:
            return None
        parts = [p if isinstance(p, str) else (m.group(p) or "") for p in self.template]
        return f"{number[: m.start()]}{''.join(parts)}{number[m.end() :]}"


@dataclass(frozen=True, slots=True)
class InboundRule:
    name: str
    pattern: re.Pattern[str]
    from_trunk: str | None
    action: Action  # never "none"
    target: str | None


@dataclass(frozen=True, slots=True)
class OutboundRoute:
    name: str
    pattern: re.Pattern[str]
    trunks: tuple[str, ...]


class DialPlan:
    """A loaded dial plan; see the module docstring for the routing order."""

    __slots__ = (
        "_inbound_by_trunk",
        "files",
        "inbound_rules",
        "normalize_rules",
        "outbound_routes",
    )

    def __init__(
        self,
        normalize_rules: Sequence[NormalizeRule] = (),
        inbound_rules: Sequence[InboundRule] = (),
        outbound_routes: Sequence[OutboundRoute] = (),
        files: Sequence[Path] = (),
    ) -> None:
        self.files = tuple(files)
        self.normalize_rules = tuple(normalize_rules)
        self.inbound_rules = tuple(inbound_rules)
        self.outbound_routes = tuple(outbound_routes)
        # The inbound rules that apply to calls from each trunk, in order; key None holds the
        # rules without from_trunk, which are all that apply to a source with no known trunk.
        names = {rule.from_trunk for rule in self.inbound_rules}
        self._inbound_by_trunk: dict[str | None, tuple[InboundRule, ...]] = {
            name: tuple(r for r in self.inbound_rules if r.from_trunk in (None, name))
            for name in names | {None}
        }

    @classmethod
    def load(
        cls,
        files: Sequence[Path],
        trunk_names: Iterable[str],
        user_names: Iterable[str] | None = None,
    ) -> DialPlan:
        """Load and merge dial plan files; raise ConfigError listing every problem.

        `trunk_names` are the configured trunks; `user_names`, when given, the [sip] users
        that user:NAME actions may name (None: any name is accepted).
        """
        loader = _Loader(set(trunk_names), None if user_names is None else set(user_names))
        for path in files:
            loader.load_file(path)
        if loader.problems:
            raise ConfigError(loader.problems)
        return cls(loader.normalize, loader.inbound, loader.outbound, files)

    def normalize(self, number: str) -> str:
        """The number rewritten by the first matching [normalize] rule (unchanged if none)."""
        for rule in self.normalize_rules:
            result = rule.apply(number)
            if result is not None:
                return result
        return number

    def route(self, number: str, from_trunk: str | None = None) -> Decision:
        """Route a call arriving from `from_trunk` (None: a SIP user or unknown source)."""
        number = self.normalize(number)
        rules = self._inbound_by_trunk.get(from_trunk) or self._inbound_by_trunk[None]
        for rule in rules:
            if rule.pattern.search(number) is not None:
                if rule.action == "outbound":
                    return self._outbound(number)
                trunks = (rule.target,) if rule.action == "trunk" and rule.target else ()
                return Decision(number, rule.action, rule.target, trunks, rule.name)
        return self._outbound(number)

    def route_outbound(self, number: str) -> Decision:
        """Route a call the gateway places itself (REST create_call, add_participant):
        the [[outbound]] routes only."""
        return self._outbound(self.normalize(number))

    def _outbound(self, number: str) -> Decision:
        for route in self.outbound_routes:
            if route.pattern.search(number) is not None:
                return Decision(number, "outbound", None, route.trunks, route.name)
        return Decision(number, "none")


class _Loader:
    """Accumulates the rules of several files and every problem found in them."""

    def __init__(self, trunk_names: set[str], user_names: set[str] | None) -> None:
        self.trunk_names = trunk_names
        self.user_names = user_names
        self.problems: list[Problem] = []
        self.normalize: list[NormalizeRule] = []
        self.inbound: list[InboundRule] = []
        self.outbound: list[OutboundRoute] = []
        self.names: dict[tuple[str, str], str] = {}  # (kind, name) -> where it was first seen

    def load_file(self, path: Path) -> None:
        data, problems = read_toml(path)
        if data is None:
            self.problems.extend(problems)
            return
        top = TomlReader(self.problems, str(path), data)
        normalize = top.section("normalize")
        for r in self._tables(normalize, "rules"):
            self._normalize_rule(r)
        normalize.finish()
        for r in self._tables(top, "inbound"):
            self._inbound_rule(r)
        for r in self._tables(top, "outbound"):
            self._outbound_route(r)
        top.finish()

    def _tables(self, parent: TomlReader, key: str) -> list[TomlReader]:
        """Readers over an array of tables; problems for anything else."""
        value = parent.raw(key)
        if value is MISSING:
            return []
        if not isinstance(value, list):
            got = type_name(value)
            parent.problem(parent.key(key), f"expected an array of tables, got {got}")
            return []
        readers = []
        for i, item in enumerate(value):
            where = f"{parent.key(key)}[{i}]"
            if isinstance(item, dict):
                readers.append(TomlReader(self.problems, parent.file, item, where))
            else:
                parent.problem(where, f"expected a table, got {type_name(item)}")
        return readers

    def _name(self, r: TomlReader, kind: str, index: int) -> str:
        name = r.string("name", "")
        if not name:
            return f"{kind}[{index}]"
        first = self.names.setdefault((kind, name), f"{r.file}: {r.prefix}")
        if first != f"{r.file}: {r.prefix}":
            r.problem(r.key("name"), f"duplicate {kind} rule name (also {first})")
        return name

    def _pattern(self, r: TomlReader) -> re.Pattern[str] | None:
        text = r.string("match", "", required=True)
        if not r.has("match") or not isinstance(r.data["match"], str):
            return None
        try:
            return re.compile(text)
        except re.error as exc:
            r.problem(r.key("match"), f"bad regex: {exc}")
            return None

    def _trunk(self, r: TomlReader, key: str, name: str) -> bool:
        if name in self.trunk_names:
            return True
        r.problem(key, f"unknown trunk {name!r}")
        return False

    def _normalize_rule(self, r: TomlReader) -> None:
        name = r.string("name", "") or f"normalize[{len(self.normalize)}]"
        pattern = self._pattern(r)
        replace = r.string("replace", "", required=True)
        r.finish()
        if pattern is None or not r.has("replace") or not isinstance(r.data["replace"], str):
            return
        try:
            template = parse_template(replace, pattern)
        except ValueError as exc:
            r.problem(r.key("replace"), str(exc))
            return
        self.normalize.append(NormalizeRule(name, pattern, replace, template))

    def _inbound_rule(self, r: TomlReader) -> None:
        name = self._name(r, "inbound", len(self.inbound))
        pattern = self._pattern(r)
        ok = pattern is not None
        from_trunk: str | None = r.string("from_trunk", "") or None
        if from_trunk is not None:
            ok = self._trunk(r, r.key("from_trunk"), from_trunk) and ok
        action: Action = "none"
        target: str | None = None
        text = r.string("action", "", required=True)
        if r.has("action") and isinstance(r.data["action"], str):
            try:
                action, target = self._action(text)
            except ValueError as exc:
                r.problem(r.key("action"), str(exc))
        r.finish()
        if ok and pattern is not None and action != "none":
            self.inbound.append(InboundRule(name, pattern, from_trunk, action, target))

    def _action(self, text: str) -> tuple[Action, str | None]:
        """Parse an action string; raise ValueError with the reason."""
        if text == "app":
            return "app", None
        if text == "outbound":
            return "outbound", None
        kind, sep, target = text.partition(":")
        if not sep or kind not in _TARGET_ACTIONS:
            raise ValueError(f"unknown action {text!r} (expected {_ACTIONS_HELP})")
        if not _NAME.fullmatch(target):
            raise ValueError(f"{kind}:NAME needs a name of letters, digits, '.', '_' or '-'")
        if kind == "trunk" and target not in self.trunk_names:
            raise ValueError(f"unknown trunk {target!r}")
        if kind == "user" and self.user_names is not None and target not in self.user_names:
            raise ValueError(f"unknown user {target!r} (not in [sip] users)")
        return _TARGET_ACTIONS[kind], target

    def _outbound_route(self, r: TomlReader) -> None:
        name = self._name(r, "outbound", len(self.outbound))
        pattern = self._pattern(r)
        ok = pattern is not None
        if not r.has("trunks"):
            r.problem(r.key("trunks"), "missing required key")
        trunks = r.strings("trunks", ())
        if r.has("trunks") and isinstance(r.data["trunks"], list) and not r.data["trunks"]:
            r.problem(r.key("trunks"), "must name at least one trunk")
        for i, trunk in enumerate(trunks):
            ok = self._trunk(r, f"{r.key('trunks')}[{i}]", trunk) and ok
            if trunk in trunks[:i]:
                r.problem(f"{r.key('trunks')}[{i}]", f"duplicate trunk {trunk!r}")
        r.finish()
        if ok and pattern is not None and trunks:
            self.outbound.append(OutboundRoute(name, pattern, trunks))


_ESCAPES: Final = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v"}
_OCTAL: Final = "01234567"


def parse_template(template: str, pattern: re.Pattern[str]) -> tuple[str | int, ...]:
    """Parse a `re.sub` replacement into literal text and group numbers, checked against the
    groups of `pattern`; raise ValueError with the reason. Follows `re`'s template syntax:
    \\1..\\99, \\g<N>, \\g<name>, octal and the usual character escapes."""
    parts: list[str | int] = []
    text: list[str] = []
    i, n = 0, len(template)

    def group(ref: int) -> None:
        if ref > pattern.groups:
            raise ValueError(
                f"replace refers to group {ref} but match has {pattern.groups} group(s)"
            )
        if text:
            parts.append("".join(text))
            text.clear()
        parts.append(ref)

    while i < n:
        c = template[i]
        i += 1
        if c != "\\":
            text.append(c)
            continue
        if i >= n:
            raise ValueError("replace ends with a lone backslash")
        c = template[i]
        i += 1
        if c == "g":
            end = template.find(">", i)
            if i >= n or template[i] != "<" or end < 0:
                raise ValueError("replace has \\g without <NAME> or <NUMBER>")
            ref = template[i + 1 : end]
            i = end + 1
            if ref.isdecimal() and ref.isascii():
                group(int(ref))
            elif ref in pattern.groupindex:
                group(pattern.groupindex[ref])
            else:
                raise ValueError(f"replace refers to unknown group name {ref!r}")
        elif c == "0":
            digits = c
            while len(digits) < 3 and i < n and template[i] in _OCTAL:
                digits += template[i]
                i += 1
            text.append(chr(int(digits, 8)))
        elif c in "123456789":
            digits = c
            if i < n and template[i] in "0123456789":
                digits += template[i]
                i += 1
                if c in _OCTAL and digits[1] in _OCTAL and i < n and template[i] in _OCTAL:
                    digits += template[i]
                    i += 1
                    if int(digits, 8) > 0o377:
                        raise ValueError(f"replace has octal escape \\{digits} out of range")
                    text.append(chr(int(digits, 8)))
                    continue
            group(int(digits))
        elif c in _ESCAPES:
            text.append(_ESCAPES[c])
        elif c == "\\":
            text.append("\\")
        elif c.isascii() and c.isalpha():
            raise ValueError(f"replace has bad escape \\{c}")
        else:
            text.append("\\" + c)
    if text:
        parts.append("".join(text))
    return tuple(parts)
