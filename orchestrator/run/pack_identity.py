"""Whether a pack folder was made from this pack: the digests a manifest pins.

Owns :func:`pack_digest` (the pack's name, parsed content and the content of every reference
file it names), :func:`settings_digest`, :func:`references` and the refusal that names what
differs when a folder holds another pack (:func:`not_this_pack`), with the one exception for
folders made before reference files were pinned (:func:`made_before_references`).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from ..pack.packfile import Pack


def settings_digest(pack: Pack) -> str:
    """sha256 of the pack file's parsed content (comments do not count): the pack's identity
    before reference files counted (manifests made before then hold this as ``sha256``)."""
    text = json.dumps(pack.raw, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def references(pack: Pack) -> dict[str, str]:
    """Every file the pack refers to (face references, init and pose images) -> its content's
    sha256; named relative to the pack file's folder when inside it."""
    base = pack.path.parent.resolve()
    paths = list(pack.face_references)
    for scene in pack.scenes:
        paths.extend(p for p in (scene.init_image, scene.pose_image) if p is not None)
    out: dict[str, str] = {}
    for path in dict.fromkeys(paths):
        resolved = Path(path).resolve()
        name = (
            resolved.relative_to(base).as_posix()
            if resolved.is_relative_to(base)
            else str(resolved)
        )
        out[name] = pack.upload(path).sha256  # hashed once, when the pack was loaded
    return out


def pack_digest(pack: Pack, refs: dict[str, str] | None = None) -> str:
    """The pack's identity for resuming: its parsed content and the content of every file it
    refers to, so a face reference replaced under the same name is a different pack."""
    refs = references(pack) if refs is None else refs
    text = json.dumps(
        {"settings": settings_digest(pack), "references": refs},
        sort_keys=True,
        separators=(",", ":"),
    )
    return hashlib.sha256(text.encode()).hexdigest()


def made_before_references(made: dict[str, Any], pack: Pack) -> bool:
    """A manifest from before reference files were part of the identity, of this pack."""
    return (
        "references" not in made
        and made.get("name") == pack.name
        and made.get("sha256") == settings_digest(pack)
    )


def not_this_pack(
    folder: Path, made: dict[str, Any], pack: Pack, digest: str, refs: dict[str, str]
) -> str:
    fix = "or pass --out with a new folder for this pack."
    then = made.get("references")
    if made.get("name") == pack.name and isinstance(then, dict):
        changed = [
            f"{name} (sha256 {str(then.get(name))[:12]}… then, {sha[:12]}… now)"
            for name, sha in refs.items()
            if name in then and then[name] != sha
        ]
        if changed:
            also = (
                " The pack file changed too."
                if made.get("settings_sha256") not in (None, settings_digest(pack))
                else ""
            )
            return (
                f"{folder} was made with other content in reference file(s) of pack "
                f"{pack.name!r}: {'; '.join(changed)} — the file was replaced under the same "
                f"name, and one pack must not mix two faces.{also} Put the old file back to "
                f"resume, {fix}"
            )
    if made.get("name") == pack.name:
        return (
            f"{folder} was made from an earlier version of pack {pack.name!r} (its content "
            f"sha256 {str(made.get('sha256'))[:12]}…, now {digest[:12]}…): the pack file changed "
            f"since. Restore the version it was made from to resume, {fix}"
        )
    return (
        f"{folder} holds pack {made.get('name')!r} (made from {made.get('file', '?')}), not "
        f"{pack.name!r} from {pack.path}. Resume it with the pack file it was made from, {fix}"
    )
