"""
txvnc's build steps beyond setup.cfg: the wheel and the sdist carry noVNC.

txvnc's console page runs noVNC in the browser. A wheel user has no checkout
to run `npm ci` in, so the build copies the npm package pinned in
package-lock.json (`@novnc/novnc`: its core/ library, the vendored pako,
and their licence files) into the package as `txvnc/novnc/`:

- `build_py` copies it into the build directory, never into the source tree
  (`txvnc/novnc/` is git-ignored); an editable install (strict mode) links
  to the same files;
- `sdist` puts it into the source archive, so a wheel built from the sdist
  needs neither node_modules nor npm.

The copy comes from the tree's own `txvnc/novnc/` when there is one (an
unpacked sdist), else from `node_modules/@novnc/novnc`, after `npm ci` when
that is missing or is not the version the lock file pins. Without npm the
build stops and says so.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.command.sdist import sdist
from setuptools.errors import ExecError

ROOT = Path(__file__).resolve().parent

#: Where `npm ci` installs noVNC, and where the package carries its copy.
NPM_PACKAGE = Path("node_modules", "@novnc", "novnc")
PACKAGED = Path("txvnc", "novnc")

#: What of noVNC's npm package the copy holds: the library the page
#: imports, the vendored pako (with its own LICENSE), and the licence
#: files (MPL-2.0 for the core; docs/LICENSE.* for the rest of noVNC).
PARTS = ("core", "vendor")
FILES = ("LICENSE.txt", "AUTHORS", "package.json")
LICENCES = "docs/LICENSE.*"

NO_NPM = (
    "txvnc's package carries noVNC, copied from node_modules/@novnc/novnc, "
    "and this tree has neither that nor a packaged copy (txvnc/novnc): npm "
    "is needed to fetch it (`npm ci`). Install npm (Debian: `apt-get install "
    "npm`, or `scripts/system-deps npm`) and build again, or build from "
    "txvnc's sdist, which carries noVNC."
)


def _version(package_json: Path) -> str | None:
    try:
        return str(json.loads(package_json.read_text())["version"])
    except (OSError, ValueError, KeyError):
        return None


def _locked_version(root: Path) -> str | None:
    try:
        lock = json.loads((root / "package-lock.json").read_text())
        return str(lock["packages"][NPM_PACKAGE.as_posix()]["version"])
    except (OSError, ValueError, KeyError):
        return None


def novnc_source(
    root: Path, which: Callable[[str], str | None] = shutil.which
) -> Path:
    """
    The directory noVNC is copied from: C{root}'s own packaged copy (an
    unpacked sdist), else its node_modules, installed with C{npm ci} first
    when missing or not the locked version.

    @raise ExecError: when noVNC has to be installed and there is no npm.
    """
    packaged = root / PACKAGED
    if (packaged / "core" / "rfb.js").is_file():
        return packaged
    installed = root / NPM_PACKAGE
    locked = _locked_version(root)
    if (installed / "core" / "rfb.js").is_file() and (
        locked is None or _version(installed / "package.json") == locked
    ):
        return installed
    npm = which("npm")
    if npm is None:
        raise ExecError(NO_NPM)
    print(f"==> installing noVNC {locked or ''} with npm ci", file=sys.stderr)
    subprocess.run(
        [npm, "ci", "--no-audit", "--no-fund", "--ignore-scripts"],
        cwd=root,
        check=True,
    )
    if not (installed / "core" / "rfb.js").is_file():
        raise ExecError(f"npm ci left no noVNC in {installed}")
    return installed


def novnc_files(source: Path) -> list[Path]:
    """
    The files of noVNC that go into the package, relative to C{source}.
    """
    found = [
        path.relative_to(source)
        for part in PARTS
        for path in (source / part).rglob("*")
        if path.is_file()
    ]
    found += [Path(name) for name in FILES if (source / name).is_file()]
    found += [path.relative_to(source) for path in source.glob(LICENCES)]
    return sorted(found)


class BuildWithNoVNC(build_py):
    """
    C{build_py} that also puts noVNC into the build's C{txvnc/novnc/}.
    """

    _mapping: dict[str, str] | None = None

    def novnc_mapping(self) -> dict[str, str]:
        """Each file of the copy in the build, with the file it comes from."""
        if self._mapping is None:
            source = novnc_source(ROOT)
            target = Path(self.build_lib, PACKAGED)
            self._mapping = {
                str(target / name): str(source / name)
                for name in novnc_files(source)
            }
        return self._mapping

    def run(self) -> None:
        super().run()
        if self.editable_mode:
            return  # the editable wheel links to get_output_mapping()'s files
        for target, source in self.novnc_mapping().items():
            self.mkpath(os.path.dirname(target))
            self.copy_file(source, target, preserve_mode=False)

    def get_output_mapping(self) -> dict[str, str]:
        return {**super().get_output_mapping(), **self.novnc_mapping()}

    def get_outputs(self, include_bytecode: bool = True) -> list[str]:
        outputs = super().get_outputs(include_bytecode)
        if self.editable_mode:
            return outputs  # get_output_mapping() already named them
        return [*outputs, *self.novnc_mapping()]


class SdistWithNoVNC(sdist):
    """
    C{sdist} whose archive holds noVNC as C{txvnc/novnc/}, so that a wheel
    built from it needs neither node_modules nor npm.
    """

    def make_release_tree(self, base_dir: str, files: list[str]) -> None:
        super().make_release_tree(base_dir, files)
        source = novnc_source(ROOT)
        for name in novnc_files(source):
            target = Path(base_dir, PACKAGED, name)
            self.mkpath(str(target.parent))
            self.copy_file(str(source / name), str(target), preserve_mode=False)


if __name__ == "__main__":
    setup(cmdclass={"build_py": BuildWithNoVNC, "sdist": SdistWithNoVNC})
