"""gateway.config: defaults, the shipped config, and the exact text of every kind of problem."""

from __future__ import annotations

import ipaddress
import re
import textwrap
from pathlib import Path

import pytest

from gateway.config import (
    Config,
    HostPort,
    ListenAddr,
    SipConfig,
    Trunk,
    default_config,
    load_config,
    parse_listen,
    trunk_for_source,
)
from gateway.errors import ConfigError, Problem

REPO = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str, name: str = "gw.toml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def problems(tmp_path: Path, text: str) -> list[str]:
    """The problem lines of a config, with the file name shortened to F."""
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return [str(p).replace(str(path), "F", 1) for p in info.value.problems]


# --- happy paths -------------------------------------------------------------------------------


def test_shipped_config_matches_design(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    config = load_config("conf/gateway.toml")
    assert config.sip.listen == (
        ListenAddr("udp", "127.0.0.1", 5060),
        ListenAddr("tcp", "127.0.0.1", 5060),
        ListenAddr("tls", "127.0.0.1", 5061),
    )
    assert config.sip.domain == "gateway.local"
    assert config.tls.cert == REPO / "var/tls/gateway.crt"
    assert config.media.port_range == (20000, 29999)
    assert config.rest.listen == HostPort("127.0.0.1", 8443)
    assert config.turn.relay_port_range == (40000, 49999)
    assert config.dialplan.files == (REPO / "dialplans/default.toml",)
    assert [t.name for t in config.trunks] == ["carrier-a", "carrier-b"]
    a = config.trunks[0]
    assert (a.host, a.port, a.transport) == ("127.0.0.1", 5070, "udp")
    assert a.inbound_from == (ipaddress.ip_network("127.0.0.1/32"),)
    assert a.codecs == ("PCMU", "PCMA")
    assert config.path == REPO / "conf/gateway.toml"
    # Every value in the shipped file is the default: an empty file gives the same config.
    defaults = default_config()
    for section in ("sip", "tls", "media", "rest", "turn", "storage", "dialplan", "log"):
        assert getattr(config, section) == getattr(defaults, section), section


def test_empty_file_gives_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    config = load_config(write(tmp_path, ""))
    assert config.sip == SipConfig()
    assert config.sip.max_calls == 10000
    assert config.sip.retry_after == 5
    assert (config.sip.t1, config.sip.t2, config.sip.t4) == (0.5, 4.0, 5.0)
    assert config.sip.user_agent == "acs-gateway"
    assert config.sip.tcp_max_buffer == 65536
    assert config.sip.max_message_size == 65535
    assert config.sip.no_answer_timeout == 120.0
    assert dict(config.sip.users) == {}
    assert config.trunks == ()
    assert config.log.level == "info"
    assert config.storage.cdr == tmp_path / "var/cdr.sqlite3"
    assert config.rest.incoming_call_webhooks == ("https://127.0.0.1:9443/incoming",)
    assert config.turn.enabled is True
    assert config.media.max_mixed == 8
    assert config.media.conference_mode == "mcu"


def test_every_key_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "ca.pem").write_text("x")
    config = load_config(
        write(
            tmp_path,
            """
            [sip]
            listen = ["udp:[::1]:5060", "TCP:0.0.0.0:0"]
            domain = "example.org"
            max_calls = 3
            retry_after = 0
            t1 = 1
            t2 = 8
            t4 = 2.5
            user_agent = "ua"
            tcp_max_buffer = 100000
            max_message_size = 2000
            no_answer_timeout = 30
            users = { alice = "s1", "bob.smith" = "s2" }
            [tls]
            cert = "/etc/gw.crt"
            key = "k.pem"
            [media]
            address = "::1"
            port_range = [1000, 1001]
            max_mixed = 3
            conference_mode = "SFU"
            [rest]
            listen = "[::]:443"
            access_key = "c2VjcmV0"
            incoming_call_webhooks = ["http://127.0.0.1:9/x"]
            allow_insecure_callbacks = true
            callback_ca = "ca.pem"
            [turn]
            enabled = false
            listen = ["tcp:127.0.0.1:5349"]
            advertise = ["udp:turn.example.org:3478"]
            realm = "r"
            relay_address = "127.0.0.2"
            relay_port_range = [1000, 1001]
            auth_secret = "s"
            users = { u = "p" }
            allowed_peers = ["10.0.0.0/8", "192.168.1.7"]
            [storage]
            cdr = "/tmp/c.db"
            [dialplan]
            files = ["a.toml", "b.toml"]
            [log]
            level = "DEBUG"
            [[trunk]]
            name = "t"
            uri = "sips:alice@carrier.example.org"
            inbound_from = ["192.0.2.0/24", "198.51.100.7:5060", "[2001:db8::1]:5061"]
            username = "alice"
            password = "pw"
            register = true
            options_interval = 0
            options_timeout = 0.5
            options_fail_after = 3
            options_ok_after = 2
            codecs = ["opus", "pcmu", "g722"]
            srtp = "mandatory"
            """,
        )
    )
    sip = config.sip
    assert sip.listen == (ListenAddr("udp", "::1", 5060), ListenAddr("tcp", "0.0.0.0", 0))
    assert str(sip.listen[0]) == "udp:[::1]:5060"
    assert (sip.max_calls, sip.retry_after, sip.t1, sip.t2, sip.t4) == (3, 0, 1.0, 8.0, 2.5)
    assert dict(sip.users) == {"alice": "s1", "bob.smith": "s2"}
    assert config.tls.cert == Path("/etc/gw.crt")
    assert config.tls.key == tmp_path / "k.pem"
    assert config.media.conference_mode == "sfu"
    assert config.rest.listen == HostPort("::", 443)
    assert config.rest.callback_ca == tmp_path / "ca.pem"
    assert config.turn.advertise == (ListenAddr("udp", "turn.example.org", 3478),)
    assert config.turn.allowed_peers[1] == ipaddress.ip_network("192.168.1.7/32")
    assert config.dialplan.files == (tmp_path / "a.toml", tmp_path / "b.toml")
    assert config.log.level == "debug"
    trunk = config.trunks[0]
    assert (trunk.host, trunk.port, trunk.transport, trunk.host_ip) == (
        "carrier.example.org",
        5061,
        "tls",
        None,
    )
    assert trunk.inbound_from[1:] == (HostPort("198.51.100.7", 5060), HostPort("2001:db8::1", 5061))
    assert trunk.codecs == ("opus", "PCMU", "G722")
    assert (trunk.options_interval, trunk.options_timeout) == (0.0, 0.5)
    assert (trunk.options_fail_after, trunk.options_ok_after) == (3, 2)
    assert (trunk.srtp, trunk.register) == ("mandatory", True)


@pytest.mark.parametrize(
    ("uri", "host", "port", "transport"),
    [
        ("sip:127.0.0.1:5070;transport=udp", "127.0.0.1", 5070, "udp"),
        ("sip:127.0.0.1", "127.0.0.1", 5060, "udp"),
        ("sip:127.0.0.1;transport=TLS", "127.0.0.1", 5061, "tls"),
        ("sip:carrier.example.org;lr;transport=tcp", "carrier.example.org", 5060, "tcp"),
        ("SIP:user:pw@[2001:db8::5]:5090", "2001:db8::5", 5090, "udp"),
        ("sip:[::1]", "::1", 5060, "udp"),
        ("sips:[::1];transport=tls", "::1", 5061, "tls"),
    ],
)
def test_trunk_uri(tmp_path: Path, uri: str, host: str, port: int, transport: str) -> None:
    config = load_config(write(tmp_path, f'[[trunk]]\nname = "t"\nuri = "{uri}"\n'))
    trunk = config.trunks[0]
    assert (trunk.host, trunk.port, trunk.transport) == (host, port, transport)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("udp:127.0.0.1:5060", ListenAddr("udp", "127.0.0.1", 5060)),
        ("tls:[::1]:5061", ListenAddr("tls", "::1", 5061)),
        ("tcp:[0:0::1]:1", ListenAddr("tcp", "::1", 1)),
    ],
)
def test_parse_listen(text: str, expected: ListenAddr) -> None:
    assert parse_listen(text) == expected


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("127.0.0.1:5060", "expected TRANSPORT:HOST:PORT with TRANSPORT udp, tcp or tls, got "),
        ("sctp:127.0.0.1:5060", "expected TRANSPORT:HOST:PORT"),
        ("udp:::1:5060", "an IPv6 host must be in brackets, as [::1]:5060"),
        ("udp:[::1]5060", "expected [IPV6]:PORT"),
        ("udp:[::g]:5060", "bad IPv6 address '::g'"),
        ("udp:localhost:5060", "expected an IP address as host, got 'localhost'"),
        ("udp:127.0.0.1:65536", "bad port '65536' (expected 0..65535)"),
        ("udp:127.0.0.1:x", "bad port 'x'"),
        ("udp:127.0.0.1", "expected HOST:PORT, got '127.0.0.1'"),
    ],
)
def test_parse_listen_errors(text: str, reason: str) -> None:
    with pytest.raises(ValueError, match="^" + re.escape(reason)):
        parse_listen(text)


# --- problems ----------------------------------------------------------------------------------


def test_problem_and_error_rendering() -> None:
    problem = Problem("conf/gateway.toml", "trunk[1].uri", "missing required key")
    assert str(problem) == "conf/gateway.toml: trunk[1].uri: missing required key"
    error = ConfigError([problem, Problem("f", "(syntax)", "bad")])
    assert str(error) == "conf/gateway.toml: trunk[1].uri: missing required key\nf: (syntax): bad"


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "nope.toml")
    assert [str(p) for p in info.value.problems] == [
        f"{tmp_path / 'nope.toml'}: (file): cannot read: No such file or directory"
    ]


def test_syntax_error_has_line_and_column(tmp_path: Path) -> None:
    assert problems(tmp_path, "[sip]\nlisten = [1,\nx = 2\n") == [
        "F: (syntax): Invalid value (at line 3, column 1)"
    ]


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "gw.toml"
    path.write_bytes(b'[sip]\ndomain = "\xff"\n')
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == f"{path}: (syntax): not valid UTF-8 (at byte 16)"


def test_unknown_keys_everywhere_are_all_reported(tmp_path: Path) -> None:
    assert problems(
        tmp_path,
        """
        colour = 1
        [sip]
        lisen = []
        [turn]
        "odd key" = 1
        [[trunk]]
        name = "a"
        uri = "sip:127.0.0.1"
        inbound = []
        [loggin]
        """,
    ) == [
        "F: sip.lisen: unknown key (did you mean 'listen'?)",
        'F: turn."odd key": unknown key',
        "F: trunk[0].inbound: unknown key (did you mean 'inbound_from'?)",
        "F: colour: unknown key",
        "F: loggin: unknown key (did you mean 'log'?)",
    ]


def test_type_errors(tmp_path: Path) -> None:
    assert problems(
        tmp_path,
        """
        tls = "x"
        trunk = { name = "a" }
        [sip]
        listen = "udp:127.0.0.1:5060"
        domain = 5
        max_calls = true
        t1 = "fast"
        users = { alice = 1, "bad user" = "x", bob = "" }
        [media]
        port_range = [1, 2, 3]
        max_mixed = 2.5
        [rest]
        incoming_call_webhooks = ["https://a/", 7]
        allow_insecure_callbacks = "yes"
        [turn]
        listen = [3478]
        allowed_peers = ["nope"]
        [dialplan]
        files = [""]
        """,
    ) == [
        "F: sip.listen: expected an array, got string",
        "F: sip.domain: expected a string, got integer",
        "F: sip.max_calls: expected an integer, got boolean",
        "F: sip.t1: expected a number, got string",
        "F: sip.users.alice: expected a string, got integer",
        'F: sip.users."bad user": not a valid name',
        "F: sip.users.bob: must not be empty",
        "F: tls: expected a table, got string",
        "F: media.port_range: expected [FIRST, LAST], two integer ports",
        "F: media.max_mixed: expected an integer, got float",
        "F: rest.allow_insecure_callbacks: expected a boolean, got string",
        "F: rest.incoming_call_webhooks[1]: expected a string, got integer",
        "F: turn.listen[0]: expected a string, got integer",
        "F: turn.allowed_peers[0]: expected a CIDR, got 'nope'",
        "F: dialplan.files[0]: must not be empty",
        "F: trunk: expected an array of tables ([[trunk]]), got table",
    ]


def test_value_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert problems(
        tmp_path,
        """
        [sip]
        listen = ["udp:127.0.0.1:5060", "udp:127.0.0.1:5060", "udp:host:1"]
        domain = ""
        max_calls = 0
        retry_after = -1
        t1 = 2
        t2 = 1
        t4 = 0
        max_message_size = 100000
        no_answer_timeout = nan
        [media]
        address = "localhost"
        port_range = [30000, 20000]
        conference_mode = "p2p"
        [rest]
        listen = "127.0.0.1"
        access_key = "not base64!"
        incoming_call_webhooks = ["http://127.0.0.1/in", "ftp://x/", "https://x:99999/"]
        callback_ca = "missing.pem"
        [turn]
        realm = ""
        relay_port_range = [0, 10]
        [log]
        level = "loud"
        """,
    ) == [
        "F: sip.listen[1]: duplicate of sip.listen[0]",
        "F: sip.listen[2]: expected an IP address as host, got 'host'",
        "F: sip.domain: must not be empty",
        "F: sip.max_calls: must be at least 1",
        "F: sip.retry_after: must be at least 0",
        "F: sip.t2: must be at least sip.t1 (2)",
        "F: sip.t4: must be greater than 0",
        "F: sip.tcp_max_buffer: must be at least sip.max_message_size (100000)",
        "F: sip.no_answer_timeout: must be a finite number",
        "F: media.address: expected an IP address, got 'localhost'",
        "F: media.port_range: FIRST must not exceed LAST",
        "F: media.conference_mode: must be one of: mcu, sfu",
        "F: rest.listen: expected HOST:PORT, got '127.0.0.1'",
        "F: rest.access_key: not valid base64",
        "F: rest.incoming_call_webhooks[0]: http:// needs rest.allow_insecure_callbacks = true",
        "F: rest.incoming_call_webhooks[1]: expected an https:// URL, got 'ftp://x/'",
        "F: rest.incoming_call_webhooks[2]: bad URL: Port out of range 0-65535",
        f"F: rest.callback_ca: no such file: {tmp_path / 'missing.pem'}",
        "F: turn.realm: must not be empty",
        "F: turn.relay_port_range: ports must be 1..65535",
        "F: log.level: must be one of: debug, info, warning, error, critical",
    ]


def test_trunk_errors(tmp_path: Path) -> None:
    assert problems(
        tmp_path,
        """
        [[trunk]]
        uri = "sip:127.0.0.1"
        [[trunk]]
        name = "a"
        [[trunk]]
        name = "b c"
        uri = "tel:+15551234567"
        [[trunk]]
        name = "d"
        uri = "sip:127.0.0.1;transport=sctp"
        inbound_from = ["10.0.0.0/33", "host:5060", "127.0.0.1:0"]
        codecs = ["PCMU", "G729", "pcmu"]
        srtp = "yes"
        register = true
        options_fail_after = 0
        options_timeout = 0
        [[trunk]]
        name = "e"
        uri = "sips:127.0.0.1;transport=udp"
        codecs = []
        [[trunk]]
        name = "f"
        uri = "sip:127.0.0.1:0"
        [[trunk]]
        name = "a"
        uri = "sip:[::1:5060"
        [[trunk]]
        name = "a"
        uri = "sip:127.0.0.2"
        """,
    ) == [
        "F: trunk[0].name: missing required key",
        "F: trunk[1].uri: missing required key",
        "F: trunk[2].name: must be letters, digits, '.', '_' or '-'",
        "F: trunk[2].uri: expected a sip: or sips: URI, got 'tel:+15551234567'",
        "F: trunk[3].uri: unsupported transport 'sctp' (expected udp, tcp or tls)",
        "F: trunk[3].inbound_from[0]: expected a CIDR or IP:PORT, got '10.0.0.0/33'",
        "F: trunk[3].inbound_from[1]: expected a CIDR or IP:PORT, got 'host:5060'",
        "F: trunk[3].inbound_from[2]: expected a CIDR or IP:PORT, got '127.0.0.1:0'",
        "F: trunk[3].codecs[1]: unknown codec 'G729' (known: PCMU, PCMA, opus, G722)",
        "F: trunk[3].codecs[2]: duplicate codec 'pcmu'",
        "F: trunk[3].options_timeout: must be greater than 0",
        "F: trunk[3].options_fail_after: must be at least 1",
        "F: trunk[3].srtp: must be one of: off, optional, mandatory",
        "F: trunk[3].register: needs a username to register with",
        "F: trunk[4].uri: a sips: URI needs transport tls, not udp",
        "F: trunk[4].codecs: must name at least one codec",
        "F: trunk[5].uri: port 0 is not a destination",
        "F: trunk[6].uri: expected [IPV6]:PORT, got '[::1:5060'",
        "F: trunk[6].name: duplicate trunk name (also trunk[1])",
        "F: trunk[7].name: duplicate trunk name (also trunk[1])",
    ]


def test_socket_clashes(tmp_path: Path) -> None:
    assert problems(
        tmp_path,
        """
        [sip]
        listen = ["udp:127.0.0.1:3478", "tls:127.0.0.1:8443"]
        [turn]
        relay_port_range = [29999, 30000]
        """,
    ) == [
        "F: turn.listen[0]: same udp socket as sip.listen[0]",
        "F: rest.listen: same tcp socket as sip.listen[1]",
        "F: turn.relay_port_range: overlaps media.port_range on 127.0.0.1",
    ]


def test_socket_clashes_through_a_wildcard_address(tmp_path: Path) -> None:
    """0.0.0.0 (or ::) on a port leaves that port to no other address of its family: `check`
    says so rather than `run` failing to bind."""
    assert problems(
        tmp_path,
        """
        [rest]
        listen = "127.0.0.1:8443"
        [observe]
        metrics_listen = "0.0.0.0:8443"
        """,
    ) == ["F: observe.metrics_listen: same tcp socket as rest.listen (a wildcard address "
          "covers the other)"]
    assert problems(
        tmp_path,
        """
        [sip]
        listen = ["udp:[::]:5060", "udp:10.1.2.3:5060", "tcp:10.1.2.3:5060"]
        """,
    ) == ["F: sip.listen[1]: same udp socket as sip.listen[0] (a wildcard address covers "
          "the other)"]
    assert problems(  # an IPv4-mapped spelling is the IPv4 address
        tmp_path,
        """
        [sip]
        listen = ["udp:[::ffff:127.0.0.1]:5060", "udp:127.0.0.1:5060"]
        """,
    ) == ["F: sip.listen[1]: same udp socket as sip.listen[0] (the same address)"]
    assert problems(  # media on every address, relays on one of them: the ranges overlap
        tmp_path,
        """
        [media]
        address = "0.0.0.0"
        port_range = [20000, 29999]
        [turn]
        relay_address = "10.0.0.1"
        relay_port_range = [29000, 39999]
        """,
    ) == ["F: turn.relay_port_range: overlaps media.port_range on 0.0.0.0"]
    # 0.0.0.0 covers no IPv6 address; another port is another socket
    config = load_config(write(tmp_path, """
        [sip]
        listen = ["udp:0.0.0.0:5060", "udp:[::1]:5060", "udp:127.0.0.1:5062"]
        """))
    assert len(config.sip.listen) == 3


# --- trunk of an inbound request ---------------------------------------------------------------


def trunks_config(tmp_path: Path) -> Config:
    return load_config(
        write(
            tmp_path,
            """
            [[trunk]]
            name = "wide"
            uri = "sip:192.0.2.1:5060"
            inbound_from = ["192.0.2.0/24", "2001:db8::/32"]
            [[trunk]]
            name = "exact"
            uri = "sip:192.0.2.7:5070"
            inbound_from = ["192.0.2.0/24"]
            [[trunk]]
            name = "hostport"
            uri = "sip:carrier.example.org"
            inbound_from = ["198.51.100.9:5060"]
            [[trunk]]
            name = "closed"
            uri = "sip:203.0.113.1"
            """,
        )
    )


@pytest.mark.parametrize(
    ("host", "port", "name"),
    [
        ("192.0.2.7", 5070, "exact"),  # both accept; exact's uri is the source
        ("192.0.2.7", 5060, "wide"),  # both accept, no uri match: first in file order
        ("192.0.2.1", 5060, "wide"),
        ("::ffff:192.0.2.7", 5070, "exact"),  # IPv4-mapped IPv6 source
        ("[2001:db8::1]", 5060, "wide"),
        ("198.51.100.9", 5060, "hostport"),
        ("198.51.100.9", 5061, None),  # host:port entries need the port too
        ("203.0.113.1", 5060, None),  # empty inbound_from accepts nothing
        ("10.0.0.1", 5060, None),
        ("not-an-ip", 5060, None),
    ],
)
def test_trunk_for_source(tmp_path: Path, host: str, port: int, name: str | None) -> None:
    trunk = trunk_for_source(trunks_config(tmp_path), host, port)
    assert (trunk.name if trunk else None) == name


def test_config_helpers(tmp_path: Path) -> None:
    config = trunks_config(tmp_path)
    assert config.trunk_names == {"wide", "exact", "hostport", "closed"}
    exact = config.trunk("exact")
    assert isinstance(exact, Trunk) and exact.port == 5070
    assert config.trunk("nope") is None
