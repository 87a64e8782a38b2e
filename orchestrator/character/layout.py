"""Where everything of one character lives: the character folder and its numbered versions.

A character folder is made by the user and holds ``character.yaml`` (a pack file whose
``character`` block is the character) and its face references. charpack adds, never
overwriting anything an earlier version made::

    ava/character.yaml                    the pack file (its lora is registered here)
    ava/references/                       3–5 face references (the user's)
    ava/curation.yaml                     optional hand-pick of training images
    ava/bootstrap/                        pack folder of the bootstrap run (no LoRA)
    ava/dataset/v<N>/                     training images + .txt captions, dataset.json, contact.jpg
    ava/training/v<N>/                    state.json (resumable), loss.json, character.before.yaml
    ava/loras/<name>-v<N>.safetensors     the trained LoRA (+ .sha256, + .loss.png beside it)
    ava/identity/v<N>/before|after/       pack folders of the 5-shot identity test
    ava/identity/v<N>/report.md|json, contact.jpg   the before/after report

Versions are whole numbers from 1. A dataset version and the training made from it share the
number; :meth:`CharacterFolder.next_version` is one more than the highest in use anywhere, so
a new dataset or training never lands on an earlier one's files.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from charpack_nodes.pipelines import catalog

from ..errors import CharacterError

PACK_FILE = "character.yaml"
CURATION_FILE = "curation.yaml"
_VERSION = re.compile(r"^v([1-9][0-9]{0,5})$")


def slug(name: str) -> str:
    """The character's name as a file-name part: lower-case letters, digits and dashes."""
    text = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    return text[:40].strip("-") or "character"


@dataclass(frozen=True)
class CharacterFolder:
    """The paths of one character folder (nothing is created until a step writes there)."""

    root: Path

    @classmethod
    def open(cls, root: Path | str) -> CharacterFolder:
        """The character folder at ``root``; refused unless it holds ``character.yaml``."""
        path = Path(root)
        if not path.is_dir():
            raise CharacterError(
                f"{path}: no such character folder — make a folder holding {PACK_FILE} (the "
                "character's pack file) and its face references (docs/character.md)"
            )
        if not (path / PACK_FILE).is_file():
            raise CharacterError(
                f"{path}: no {PACK_FILE} — write the character's pack file there "
                "(docs/character.md shows one)"
            )
        return cls(path.resolve())

    @property
    def pack_file(self) -> Path:
        return self.root / PACK_FILE

    @property
    def curation_file(self) -> Path:
        return self.root / CURATION_FILE

    @property
    def bootstrap(self) -> Path:
        return self.root / "bootstrap"

    def dataset(self, version: int) -> Path:
        return self.root / "dataset" / f"v{version}"

    def training(self, version: int) -> Path:
        return self.root / "training" / f"v{version}"

    def identity(self, version: int) -> Path:
        return self.root / "identity" / f"v{version}"

    @property
    def loras(self) -> Path:
        return self.root / catalog.FOLDER_LORAS  # named like the servers' LoRA folder

    def lora_file(self, name: str, version: int) -> Path:
        return self.loras / f"{slug(name)}-v{version}.safetensors"

    def versions(self, kind: str) -> list[int]:
        """The versions present under ``dataset``/``training``/``identity``, ascending."""
        base = self.root / kind
        if not base.is_dir():
            return []
        found = (_VERSION.match(p.name) for p in base.iterdir() if p.is_dir())
        return sorted(int(m.group(1)) for m in found if m)

    def latest(self, kind: str) -> int | None:
        versions = self.versions(kind)
        return versions[-1] if versions else None

    def next_version(self) -> int:
        """One more than the highest version of any dataset, training or identity test."""
        used = [v for kind in ("dataset", "training", "identity") for v in self.versions(kind)]
        return max(used, default=0) + 1
