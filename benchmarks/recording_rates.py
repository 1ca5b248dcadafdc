"""
Bytes per minute of a console recording (docs/recording.md, "Bytes per
minute"): an Xtigervnc desktop shown through txvnc's page in headless
Chromium, recorded (--record-all, record_input), for an idle desktop,
typing, and a moving screen; prints one table.

    .venv/bin/python benchmarks/recording_rates.py [--seconds 60]

Needs what `make test` installs (Xtigervnc, xsetroot, Chromium, noVNC).
"""

from __future__ import annotations

import argparse
import os
import random
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from txvnc.core.recfile import INPUT, SERVER, read_file

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
CHROMIUM = "/usr/bin/chromium"
WIDTH, HEIGHT = 640, 480


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 30) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listens on {port}")


def random_bitmap(path: Path) -> None:
    """A full-screen XBM of random bits: the worst case for any encoding."""
    data = os.urandom(WIDTH * HEIGHT // 8)
    lines = [
        ", ".join(f"0x{b:02x}" for b in data[i : i + 12])
        for i in range(0, len(data), 12)
    ]
    body = ",\n   ".join(lines)
    path.write_text(
        f"#define m_width {WIDTH}\n#define m_height {HEIGHT}\n"
        f"static unsigned char m_bits[] = {{\n   {body}}};\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--seconds", type=float, default=60.0)
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    tmp = Path(tempfile.mkdtemp(prefix="txvnc-rates-"))
    recordings = tmp / "recordings"
    recordings.mkdir()
    vnc_port, proxy_port, api_port = free_port(), free_port(), free_port()
    display = f":{random.randint(200, 400)}"
    xvnc = subprocess.Popen(
        ["Xtigervnc", display, "-rfbport", str(vnc_port), "-interface", "127.0.0.1",
         "-geometry", f"{WIDTH}x{HEIGHT}", "-depth", "24", "-SecurityTypes", "None"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    txvnc = subprocess.Popen(
        [str(BIN / "twistd"), "-n", "--pidfile=", "txvnc",
         "--listen", f"tcp:{proxy_port}:interface=127.0.0.1",
         "--api-listen", f"tcp:{api_port}:interface=127.0.0.1",
         "--store", "memory:", "--api-key-file", str(tmp / "key"),
         "--secret-key-file", str(tmp / "secret"),
         "--allowed-target", "127.0.0.1:1024-65535",
         "--novnc", str(REPO / "node_modules" / "@novnc" / "novnc"),
         "--base-url", f"http://127.0.0.1:{proxy_port}",
         "--record-dir", str(recordings)],
        cwd=tmp, stdout=(tmp / "twistd.log").open("wb"), stderr=subprocess.STDOUT,
    )  # fmt: skip
    rows = []
    try:
        wait_port(vnc_port)
        wait_port(proxy_port)
        wait_port(api_port)
        cli = [str(BIN / "txvnc"), "--api-url", f"http://127.0.0.1:{api_port}",
               "--api-key-file", str(tmp / "key")]  # fmt: skip
        env = {**os.environ, "DISPLAY": display}
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=CHROMIUM,
                args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                      "--disable-component-update"],
            )  # fmt: skip
            for name in ("idle desktop", "typing", "moving screen"):
                subprocess.run(["xsetroot", "-solid", "#204060"], env=env, check=True)
                made = subprocess.run(
                    [*cli, "console", "create", "--host", "127.0.0.1", "--port",
                     str(vnc_port), "--record", "--record-input", "-f", "value",
                     "-c", "access_url"],
                    capture_output=True, text=True, check=True,
                )  # fmt: skip
                url = made.stdout.strip()
                token = re.search(r"token=([A-Za-z0-9_-]+)", url).group(1)
                before = set(recordings.iterdir())
                page = browser.new_page(viewport={"width": 1024, "height": 768})
                page.goto(url)
                page.wait_for_function(
                    "() => document.getElementById('status').dataset.state === 'connected'"
                )
                # Keys reach noVNC once its screen has the focus.
                page.click("#screen canvas")
                end = time.monotonic() + args.seconds
                step = 0
                while time.monotonic() < end:
                    if name == "typing":
                        page.keyboard.press(random.choice("abcdefghij klmnop"))
                        time.sleep(0.2)
                    elif name == "moving screen":
                        bitmap = tmp / "noise.xbm"
                        random_bitmap(bitmap)
                        subprocess.run(["xsetroot", "-bitmap", str(bitmap)], env=env, check=True)
                        time.sleep(0.5)
                    else:
                        time.sleep(0.5)
                    step += 1
                subprocess.run([*cli, "console", "revoke", "--", token], check=True,
                               capture_output=True)  # fmt: skip
                page.close()
                time.sleep(1.0)
                (path,) = set(recordings.iterdir()) - before
                recording = read_file(str(path))
                minutes = max(recording.duration_ms(), 1) / 60000
                server = sum(len(d) for k, _, d in recording.records if k == SERVER)
                keys = sum(len(d) for k, _, d in recording.records if k == INPUT)
                rows.append((name, path.stat().st_size / minutes, server / minutes,
                             keys / minutes))  # fmt: skip
            browser.close()
    finally:
        txvnc.terminate()
        xvnc.terminate()
        txvnc.wait(30)
        xvnc.wait(30)
    print(f"{'screen':<16} | {'on disk/min':>12} | {'relayed/min':>12} | {'input/min':>10}")
    print("-" * 60)
    for name, disk, server, keys in rows:
        print(f"{name:<16} | {disk:>12,.0f} | {server:>12,.0f} | {keys:>10,.0f}")


if __name__ == "__main__":
    main()
