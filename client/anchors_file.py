"""The publisher's trust anchors read from a file (PROTOCOL 15.5), for the library and the CLI."""

from __future__ import annotations

from pathlib import Path

from ..node.anchors import MAX_ANCHORS_BYTES, Anchors, parse_anchors
from ..node.errors import SettingsError


def read_anchors(path: Path) -> Anchors:
    """The trust anchors in the file ``path`` (15.5). Raises SettingsError [bad_settings]."""
    try:
        with path.open("rb") as f:
            data = f.read(MAX_ANCHORS_BYTES + 1)
    except OSError as e:
        raise SettingsError(f"{path}: cannot read the trust anchors: {e.strerror}") from None
    try:
        return parse_anchors(data)
    except SettingsError as e:
        raise SettingsError(f"{path}: {e.message}") from None
