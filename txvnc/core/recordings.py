"""
The recordings directory (C{--record-dir}): where every proxy of a
deployment writes its recordings and where the token API finds them.

Every call here touches the disk and blocks: the API and the proxy run
them in a thread. Files are named by their id (L{txvnc.core.recfile}), so
proxies sharing one directory (an NFS or CephFS mount) never write the same
file, and any API node lists what all of them wrote.
"""

from __future__ import annotations

import os
from typing import Any

from txvnc.core.recfile import SUFFIX, NotARecording, read_header, valid_id
from txvnc.core.tokens import iso8601


class RecordingDirectory:
    """
    The recordings under C{path}, by id.
    """

    def __init__(self, path: str) -> None:
        self.path = path

    def path_for(self, recording_id: str) -> str | None:
        """The file of C{recording_id}, or L{None} for an id no file may have."""
        if not valid_id(recording_id):
            return None
        return os.path.join(self.path, recording_id + SUFFIX)

    def metadata(self, recording_id: str) -> dict[str, Any] | None:
        """
        What the API shows of one recording (never its content), or L{None}
        when there is no such recording.
        """
        path = self.path_for(recording_id)
        if path is None:
            return None
        try:
            header = read_header(path)
            stat = os.stat(path)
        except (OSError, NotARecording, ValueError):
            return None
        return {
            "id": recording_id,
            "instance_uuid": header.instance_uuid,
            "target": header.target,
            "token_hash": header.token_hash,
            "node": header.node,
            "console_id": header.console_id,
            "started_at": iso8601(header.started_at),
            "last_written_at": iso8601(stat.st_mtime),
            "size": stat.st_size,
            "input": header.input,
            "clipboard": header.clipboard,
            "_started": header.started_at,
            "_modified": stat.st_mtime,
        }

    def ids(self) -> list[str]:
        try:
            names = os.listdir(self.path)
        except FileNotFoundError:
            return []
        found = [n[: -len(SUFFIX)] for n in names if n.endswith(SUFFIX)]
        return sorted(i for i in found if valid_id(i))

    def find(
        self,
        instance_uuid: str | None = None,
        since: float | None = None,
        until: float | None = None,
    ) -> list[dict[str, Any]]:
        """
        The recordings (metadata, oldest first) of C{instance_uuid} that
        were being written between C{since} and C{until} (POSIX seconds).
        """
        out = []
        for recording_id in self.ids():
            meta = self.metadata(recording_id)
            if meta is None:
                continue
            if instance_uuid is not None and meta["instance_uuid"] != instance_uuid:
                continue
            if since is not None and meta["_modified"] < since:
                continue
            if until is not None and meta["_started"] > until:
                continue
            out.append(public(meta))
        return out

    def delete(self, recording_id: str) -> bool:
        """Remove a recording; L{False} when there was none."""
        path = self.path_for(recording_id)
        if path is None:
            return False
        try:
            os.remove(path)
        except FileNotFoundError:
            return False
        return True

    def purge(self, before: float) -> list[str]:
        """
        Remove the recordings last written before C{before}; their ids.
        """
        gone = []
        for recording_id in self.ids():
            path = self.path_for(recording_id)
            assert path is not None
            try:
                if os.stat(path).st_mtime < before:
                    os.remove(path)
                    gone.append(recording_id)
            except FileNotFoundError:
                continue
        return gone


def public(meta: dict[str, Any]) -> dict[str, Any]:
    """Metadata without the fields kept for filtering."""
    return {k: v for k, v in meta.items() if not k.startswith("_")}
