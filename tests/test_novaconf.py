"""
--nova-config: a nova.conf as an operator has it becomes txvnc's options;
--config and the command line win; what txvnc does not honour is listed.
"""

import pytest
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import LogLevel, globalLogPublisher
from twisted.python.usage import UsageError

from txvnc.consoleauth.nova import NovaTokenStore
from txvnc.service.novaconf import read_nova_config
from txvnc.tap import Options, makeService

#: A cell's nova.conf as deployment tools write it: comments, sections of
#: other services, oslo.config's spelling.
NOVA_CONF = """
[DEFAULT]
# nova-novncproxy runs beside nova-conductor on this node
transport_url = rabbit://nova:secret@rabbit:5672/
ssl_only = {ssl_only}
cert = {cert}
key = {key}
web = /usr/share/novnc
record = /var/log/nova/console.rec

[api]
auth_strategy = keystone

[vnc]
enabled = true
novncproxy_host = 192.0.2.10
novncproxy_port = 6090
novncproxy_base_url = https://console.example.com:6090/vnc_lite.html
server_listen = 0.0.0.0
auth_schemes = vencrypt,none
vencrypt_ca_certs = {ca}
vencrypt_client_cert = {cert}
vencrypt_client_key = {key}

[console]
allowed_origins = dashboard.example.com,horizon.example.com
ssl_minimum_version = tlsv1_2

[database]
connection = mysql+pymysql://nova:db%40pw@db.example/nova_cell1?charset=utf8

[consoleauth]
token_ttl = 600
enforce_session_timeout = True
"""


pytestmark = pytest.mark.usefixtures("in_tmp")


def write_conf(tmp_path, ssl_only="false", cert=None, key=None, ca=None, text=None):
    path = tmp_path / "nova.conf"
    path.write_text(
        (text or NOVA_CONF).format(
            ssl_only=ssl_only,
            cert=cert or tmp_path / "missing.pem",
            key=key or tmp_path / "missing.key",
            ca=ca or tmp_path / "missing-ca.pem",
        )
    )
    return path


def test_reads_what_a_proxy_needs(tmp_path):
    conf = read_nova_config(str(write_conf(tmp_path)))
    assert conf.values["listen"] == "tcp:6090:interface=192.0.2.10"
    assert conf.values["base-url"] == "https://console.example.com:6090"
    assert conf.values["vnc-security"] == "vencrypt"
    assert conf.values["vnc-ca-cert"] == str(tmp_path / "missing-ca.pem")
    assert conf.values["allowed-origin"] == [
        "dashboard.example.com",
        "horizon.example.com",
    ]
    assert conf.values["store"] == (
        "nova:mysql+pymysql://nova:db%40pw@db.example/nova_cell1?charset=utf8"
    )
    assert conf.values["end-at-token-expiry"] == "yes"
    assert conf.values["vnc-check-hostname"] == "no"
    ignored = "\n".join(conf.ignored)
    for name in (
        "[DEFAULT] record",
        "[DEFAULT] web",
        "[DEFAULT] cert without ssl_only",
        "[vnc] auth_schemes after vencrypt",
        "[console] ssl_minimum_version",
    ):
        assert name in ignored
    # Options of other services are none of the proxy's business.
    assert "transport_url" not in ignored and "secret" not in ignored


def test_defaults_are_novas(tmp_path):
    path = tmp_path / "nova.conf"
    path.write_text("[database]\nconnection = sqlite:////var/lib/nova/nova.sqlite\n")
    conf = read_nova_config(str(path))
    assert conf.values == {
        "listen": "tcp:6080:interface=0.0.0.0",
        "vnc-check-hostname": "no",
        "store": "nova:sqlite:////var/lib/nova/nova.sqlite",
    }
    assert conf.ignored == []


def test_ssl_only_listens_with_tls(tmp_path):
    conf = read_nova_config(
        str(write_conf(tmp_path, ssl_only="True", cert="/etc/c.pem", key="/etc/k.pem"))
    )
    assert conf.values["listen"] == (
        "ssl:6090:interface=192.0.2.10:certKey=/etc/c.pem:privateKey=/etc/k.pem"
    )


@pytest.mark.parametrize(
    "text, message",
    [
        ("[vnc]\nnovncproxy_port = 6080\n", "no \\[database\\] connection"),
        ("[database]\nconnection = sqlite:///x\n[vnc]\nnovncproxy_port = x\n", "port"),
        (
            "[database]\nconnection = sqlite:///x\n[vnc]\nauth_schemes = sasl\n",
            "auth_schemes",
        ),
        ("not an ini file", "not a nova.conf"),
    ],
)
def test_mistakes_are_usage_errors(tmp_path, text, message):
    path = tmp_path / "nova.conf"
    path.write_text(text)
    with pytest.raises(UsageError, match=message):
        read_nova_config(str(path))
    with pytest.raises(UsageError):
        read_nova_config(str(tmp_path / "absent.conf"))


def test_command_line_and_config_win(tmp_path):
    path = tmp_path / "nova.conf"
    db = tmp_path / "nova.sqlite"
    path.write_text(
        f"[database]\nconnection = sqlite:///{db}\n"
        "[vnc]\nnovncproxy_port = 6090\n[console]\nallowed_origins = a.example\n"
    )
    toml = tmp_path / "txvnc.toml"
    toml.write_text('listen = "tcp:7000"\n')
    config = Options()
    config.parseOptions(
        [
            "--nova-config", str(path),
            "--config", str(toml),
            "--allowed-origin", "b.example",
            "--vnc-security", "vnc",
        ]
    )  # fmt: skip
    assert config["listen"] == "tcp:7000"
    assert config["store"] == f"nova:sqlite:///{db}"
    assert config["allowed-origin"] == ["a.example", "b.example"]
    assert config["vnc-security"] == "vnc"
    assert config.settings.nova_config == str(path)


def test_service_reads_novas_tokens_and_names_what_it_ignores(tmp_path):
    path = tmp_path / "nova.conf"
    path.write_text(
        f"[DEFAULT]\nrecord = {tmp_path / 'missing' / 'rec'}\n[database]\n"
        f"connection = sqlite:///{tmp_path / 'nova.sqlite'}\n"
    )
    config = Options()
    config.parseOptions(["--nova-config", str(path)])
    events = []
    globalLogPublisher.addObserver(events.append)
    try:
        service = makeService(config, MemoryReactorClock())
    finally:
        globalLogPublisher.removeObserver(events.append)
    stores = [
        s.store for s in service if isinstance(getattr(s, "store", None), NovaTokenStore)
    ]
    assert len(stores) == 1
    warnings = [
        e for e in events if e.get("log_level") == LogLevel.warn and "note" in e
    ]
    assert [e["note"].split(":")[0] for e in warnings] == ["[DEFAULT] record"]


def test_record_records_every_console_in_its_directory(tmp_path):
    """[DEFAULT] record = DIR/PREFIX records every console into DIR (txvnc's format); a directory that is not there is named as not honoured."""
    recordings = tmp_path / "recordings"
    recordings.mkdir()
    path = tmp_path / "nova.conf"
    path.write_text(
        f"[DEFAULT]\nrecord = {recordings / 'console.rec'}\n[database]\n"
        f"connection = sqlite:///{tmp_path / 'nova.sqlite'}\n"
    )
    conf = read_nova_config(str(path))
    assert conf.values["record-dir"] == str(recordings)
    assert conf.values["record-all"] and not conf.ignored
    config = Options()
    config.parseOptions(["--nova-config", str(path)])
    assert config.settings.record_dir == str(recordings) and config.settings.record_all
    path.write_text(path.read_text().replace(str(recordings), str(tmp_path / "gone")))
    conf = read_nova_config(str(path))
    assert "record-dir" not in conf.values
    assert conf.ignored[0].startswith("[DEFAULT] record: no writable directory")
