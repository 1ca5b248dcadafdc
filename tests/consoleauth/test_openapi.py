"""
The OpenAPI document against the live API: schemathesis drives a real
C{twistd txvnc --no-proxy} with generated requests, valid and invalid, and
every answer must be documented, match its schema and never be a 5xx.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.support.processes import clean_env
from tests.support.twistd import start_twistd

REPO = Path(__file__).resolve().parents[2]
SCHEMATHESIS = Path(sys.executable).parent / "schemathesis"
KEY = "schemathesis-key-" + "s" * 24

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


def test_document_is_openapi_3_and_names_every_route():
    """docs/api/openapi.yaml parses as OpenAPI 3 and documents each route the resource serves."""
    document = yaml.safe_load((REPO / "docs" / "api" / "openapi.yaml").read_text())
    assert document["openapi"].startswith("3.")
    assert set(document["paths"]) == {
        "/v1/tokens",
        "/v1/tokens/{token}",
        "/v1/tokens/{token}/use",
        "/v1/instances/{instance_uuid}/tokens",
        "/v1/sessions",
        "/v1/sessions/{session_id}",
        "/v1/revocations",
        "/v1/proxies/{node}/sessions",
        "/v1/recordings",
        "/v1/recordings/{recording_id}",
        "/v1/recordings/{recording_id}/file",
        "/v1/recordings/{recording_id}/replay",
        "/v1/replays/{replay_token}",
        "/v1/openapi.yaml",
    }


def test_schemathesis_against_the_live_api(tmp_path):
    """Generated requests to every operation get no 5xx and only documented, schema-true answers."""
    keys = tmp_path / "keys"
    keys.write_text(KEY + "\n")  # one key with both roles reaches every route
    keys.chmod(0o600)  # twistd refuses a key file others can read
    api = start_twistd(
        tmp_path,
        "--audit-log",
        str(tmp_path / "api-audit.jsonl"),
        "--record-dir",
        str(tmp_path),
        api_key_file=keys,
        proxy=False,
        base_url="http://proxy.example:6080",
    )
    try:
        result = subprocess.run(
            [
                str(SCHEMATHESIS),
                "--config-file",
                str(Path(__file__).with_name("schemathesis.toml")),
                "run",
                f"{api.api_url}/v1/openapi.yaml",
                "--header",
                f"Authorization: Bearer {KEY}",
                "--checks",
                "all",
                "--max-examples",
                "25",
                "--seed",
                "20261124",
                "--workers",
                "1",
                "--generation-database",
                "none",
                "--no-color",
            ],
            capture_output=True,
            text=True,
            timeout=240,
            cwd=tmp_path,
            env=clean_env(),
        )
    finally:
        api.stop(clean=False)
    output = result.stdout + result.stderr
    (tmp_path / "schemathesis.txt").write_text(output)
    assert result.returncode == 0, output[-6000:]
    assert "Traceback" not in api.log.text(), api.log.text()[-6000:]
    assert KEY not in api.log.text()
