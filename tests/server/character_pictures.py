"""Copy the character end-to-end test's pictures into docs/img for docs/character.md.

    pytest tests/server/test_character_e2e.py && python -m tests.server.character_pictures

The pictures ``docs/img/character-*.jpg`` are what the last test-world run of the creator's
path made (``.artefacts/character/``, or ``$CHARPACK_ARTEFACTS/character``): the bootstrap
pack, the dataset's contact sheet, the loss plot and the identity test's before/after sheet.
"""

from __future__ import annotations

import sys

from tests.browser.conftest import artefacts_dir
from tests.browser.docs_pictures import save_jpeg
from tests.comfy.install import REPO

DOCS = REPO / "docs" / "img"
PICTURES = {  # artefact -> (docs picture, width)
    "bootstrap-contact.jpg": ("character-bootstrap.jpg", 1200),
    "dataset-contact.jpg": ("character-dataset.jpg", 1200),
    "loss.png": ("character-loss.jpg", 960),
    "identity-contact.jpg": ("character-identity.jpg", 1200),
}


def main() -> int:
    source = artefacts_dir() / "character"
    missing = [name for name in PICTURES if not (source / name).is_file()]
    if missing:
        sys.stderr.write(
            f"{source}: missing {', '.join(missing)}; first run "
            "pytest tests/server/test_character_e2e.py\n"
        )
        return 1
    for name, (target, width) in PICTURES.items():
        save_jpeg(source / name, DOCS / target, width)
        sys.stdout.write(f"wrote {(DOCS / target).relative_to(REPO)}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
