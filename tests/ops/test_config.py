"""
--config: options from a TOML file, the command line winning, mistakes as
usage errors, and the documented example.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from twisted.python.usage import UsageError

from txvnc.service.config import apply_config, load_config
from txvnc.tap import Options

REPO = Path(__file__).resolve().parents[2]


pytestmark = pytest.mark.usefixtures("in_tmp")


def parse(*argv):
    config = Options()
    config.parseOptions(list(argv))
    return config


def write(tmp_path, text):
    path = tmp_path / "txvnc.toml"
    path.write_text(text)
    return str(path)


def test_values_from_the_file(tmp_path):
    """Strings, numbers, flags and arrays in the file become options."""
    path = write(
        tmp_path,
        'store = "memory:"\n'
        "idle-timeout = 600\n"
        "max_connections = 50\n"
        "no-proxy = true\n"
        'allowed-origin = ["https://a.example", "b.example"]\n'
        'log-format = "json"\n',
    )
    config = parse("--config", path)
    assert config["store"] == "memory:"
    assert config["idle-timeout"] == 600.0
    assert config["max-connections"] == 50
    assert config["no-proxy"]
    assert config["allowed-origin"] == ["https://a.example", "b.example"]
    assert config["log-format"] == "json"


def test_command_line_wins(tmp_path):
    """An option on the command line overrides the file, before or after --config."""
    path = write(tmp_path, 'store = "memory:"\nidle-timeout = 600\n')
    config = parse("--idle-timeout", "60", f"--config={path}")
    assert config["idle-timeout"] == 60.0
    assert config["store"] == "memory:"
    config = parse("--config", path, "--store", "sqlite:x.sqlite")
    assert config["store"] == "sqlite:x.sqlite"


@pytest.mark.parametrize(
    "text, message",
    [
        ("nonsense = 1\n", "nonsense is not a txvnc option"),
        ('idle-timeout = "soon"\n', "'soon' is not a number"),
        ("no-api = 1\n", "no-api must be true or false"),
        ("store = 5\n", "store must be a string"),
        ("allowed-origin = [1]\n", "must be a string or an array"),
        ('config = "other.toml"\n', "cannot name another"),
        ("this is not toml\n", "not valid TOML"),
        ("idle-timeout = -5\n", "--idle-timeout must not be negative"),
    ],
)
def test_mistakes_are_usage_errors(tmp_path, text, message):
    """A wrong key or value in the file is a usage error naming it."""
    path = write(tmp_path, text)
    with pytest.raises(UsageError, match=message):
        parse("--config", path)


def test_missing_file_is_a_usage_error(tmp_path):
    """A config file that does not exist is a usage error, not a traceback."""
    with pytest.raises(UsageError, match="No such file"):
        parse("--config", str(tmp_path / "nope.toml"))


def test_documented_example_is_valid():
    """Every key of docs/txvnc.toml.example is a txvnc option with a valid value."""
    path = str(REPO / "docs" / "txvnc.toml.example")
    values = load_config(path)
    config = Options()
    apply_config(config, values, path)
    assert config["idle-timeout"] == 1800.0
    assert config["listen"].startswith("ssl:6443:")
    assert config["allowed-origin"] == ["https://dashboard.example.com"]


def test_systemd_unit_example_runs_twistd_with_the_config():
    """The systemd unit example starts twistd in the foreground with --config and reloads with SIGHUP."""
    unit = (REPO / "docs" / "txvnc.service.example").read_text()
    assert "ExecStart=/opt/txvnc/bin/twistd --nodaemon --pidfile= txvnc --config" in unit
    assert "ExecReload=/bin/kill -HUP $MAINPID" in unit
    assert "KillSignal=SIGTERM" in unit
