"""
The end-of-session log scan finds what it must and nothing else.
"""

from tests.support.logscan import leaks

LINE = '2026-11-24T01:00:00+0000 [twisted.python.log#info] "127.0.0.1" - - "GET {} HTTP/1.1" 200'


def write(tmp_path, *lines):
    (tmp_path / "run").mkdir(exist_ok=True)
    (tmp_path / "run" / "sample.log").write_text("\n".join(lines) + "\n")


def test_redacted_lines_pass(tmp_path):
    """Lines with tokens replaced by their hash are clean."""
    write(
        tmp_path,
        LINE.format("/vnc_auto.html?token=~0123456789ab"),
        LINE.format("/v1/tokens/~0123456789ab"),
        LINE.format("/websockify?token=short"),
    )
    assert leaks(tmp_path, [], "sample.log") == []


def test_unredacted_tokens_are_found(tmp_path):
    """A token in a query, an encoded path parameter or an API path is found."""
    token = "AbCdEfGhIjKlMnOpQrStUvWxYz0123456789-_abcde"
    write(
        tmp_path,
        LINE.format(f"/vnc_auto.html?token={token}"),
        LINE.format(f"/?path=websockify%3Ftoken%3D{token}"),
        LINE.format(f"/v1/tokens/{token}"),
    )
    assert len(leaks(tmp_path, [], "sample.log")) == 3


def test_key_files_and_registered_secrets_are_found(tmp_path):
    """The contents of a key file and a registered password are found, wherever they appear."""
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "txvnc-api.key").write_text("the-api-key-1234\n")
    write(tmp_path, "using key the-api-key-1234", "password s3cret! sent", "nothing")
    found = leaks(tmp_path, ["s3cret!"], "sample.log")
    assert [f.rsplit(":", 2)[1] for f in found] == ["1", "2"]


def every_byte_encoded(text, hex_format="%{:02X}"):
    return "".join(hex_format.format(b) for b in text.encode())


def test_registered_secrets_are_found_in_every_encoding(tmp_path):
    """
    A registered token or password is found wherever it stands and however
    a URL or a JSON log carries it: bare, after any name, every byte
    percent-encoded (either case), encoded twice, with '+' for a space, and
    JSON-escaped; each line names only its kind.
    """
    token = "Zy0123456789-_abcdefghijklmnopqrstuvwxyzABC"
    password = 'p "w!/d'
    lines = [
        f"console {token} opened",
        LINE.format(f"/websockify?session={token}"),
        LINE.format(f"/?path={every_byte_encoded('websockify?token=' + token)}"),
        LINE.format(f"/?path={every_byte_encoded(token, '%{:02x}')}"),
        LINE.format(
            "/?path=websockify%253Ftoken%253D"
            + every_byte_encoded(token).replace("%", "%25")
        ),
        "Cookie: other=1; token=" + token,
        LINE.format("/login?pw=p+%22w%21%2Fd"),
        '{"log_format": "asked with ' + password.replace('"', '\\"') + '"}',
    ]
    write(tmp_path, *lines)
    found = leaks(tmp_path, [token, password], "sample.log")
    assert [f.rsplit(":", 2)[1] for f in found] == [
        str(n) for n in range(1, len(lines) + 1)
    ]
    assert all(f.endswith(": a secret") for f in found)
    assert not any(token in f or password in f for f in found)


def test_unregistered_tokens_are_found_however_encoded(tmp_path):
    """A token-shaped value after token= or /v1/tokens/ is found also when encoded twice or in JSON."""
    token = "AbCdEfGhIjKlMnOpQrStUvWxYz0123456789-_abcde"
    write(
        tmp_path,
        LINE.format(f"/?path=websockify%253Ftoken%253D{token}"),
        LINE.format(f"/x?next=%2Fv1%2Ftokens%2F{token}"),
        '{"token": "' + token + '"}',
    )
    assert len(leaks(tmp_path, [], "sample.log")) == 3


def test_redacted_encoded_lines_pass(tmp_path):
    """Hashes in encoded forms, and a short secret's lookalikes, are clean."""
    write(
        tmp_path,
        LINE.format("/?path=websockify%3Ftoken%3D~0123456789ab"),
        LINE.format("/x?next=%2Fv1%2Ftokens%2F~0123456789ab"),
        '{"token": "~0123456789ab"}',
        LINE.format("/static/app.js?v=100%25"),
    )
    assert leaks(tmp_path, ["s3cret!"], "sample.log") == []
