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
