"""The one rule for pack, scene and image names, shared by the pack validator and the saver.

A name becomes a folder or file name on the server and, after download, on the user's machine,
so it must be one plain path component that every target file system keeps as written: no path
separators or characters Windows refuses (``< > : " / \\ | ? *``), no control or invisible
format characters, no surrounding whitespace and no final ``.`` (Windows drops both, so the file
would not be found under its name), not ``.``/``..``, not a Windows device name (``con``,
``nul``, ``com1`` … also with an extension, in any case), and not longer than
:data:`MAX_NAME_BYTES` in UTF-8. ``charpack.pack.packfile`` refuses such a name before anything
is sent and ``charpack_nodes/ops/paths.py`` refuses it before anything is written; both call
:func:`name_problem`, so they cannot drift. Standard library only.
"""

from __future__ import annotations

import unicodedata

MAX_NAME_BYTES = 120
FORBIDDEN_CHARS = frozenset('/\\:*?"<>|')
# Windows device names, refused on every OS so a pack folder copies to any machine. Windows
# also treats the superscript digits ¹ ² ³ as digits here, and CONIN$/CONOUT$ as consoles.
_DIGITS = "0123456789\u00b9\u00b2\u00b3"
RESERVED_NAMES = frozenset(
    {"con", "prn", "aux", "nul", "conin$", "conout$"}
    | {f"com{d}" for d in _DIGITS}
    | {f"lpt{d}" for d in _DIGITS}
)
# Control, format (zero-width, bidi overrides), line/paragraph separators, lone surrogates.
_INVISIBLE = ("Cc", "Cf", "Cs", "Zl", "Zp")


def name_problem(value: object) -> str | None:
    """What makes ``value`` unusable as a pack, scene or image name, or None when it is fine.

    The answer completes a sentence about the name: "is empty", "ends with '.'", ….
    """
    if not isinstance(value, str) or not value.strip():
        return "is empty"
    if value != value.strip():
        return "starts or ends with whitespace (Windows drops a final space)"
    control = [c for c in value if unicodedata.category(c) in _INVISIBLE]
    if control:
        shown = ", ".join(f"U+{ord(c):04X}" for c in dict.fromkeys(control[:8]))
        return f"contains control or invisible characters ({shown})"
    if set(value) == {"."}:
        return "is a relative folder reference"
    bad = sorted({c for c in value if c in FORBIDDEN_CHARS})
    if bad:
        shown = " ".join(repr(c) for c in bad)
        return f"contains {shown} (a path separator or reserved character)"
    if value.endswith("."):
        return "ends with '.' (Windows drops it)"
    if value.split(".")[0].rstrip(" ").lower() in RESERVED_NAMES:
        return (
            "is a device name on Windows (con, prn, aux, nul, com0-com9, lpt0-lpt9, conin$, "
            "conout$; with any extension)"
        )
    size = len(value.encode("utf-8"))
    if size > MAX_NAME_BYTES:
        return f"is {size} bytes long in UTF-8; keep it within {MAX_NAME_BYTES}"
    return None


def name_key(value: str) -> str:
    """The form two names share when Windows or macOS would store them as one folder (case and
    Unicode normalisation do not count)."""
    return unicodedata.normalize("NFC", value).casefold()
