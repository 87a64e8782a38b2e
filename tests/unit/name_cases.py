"""Names the saver must refuse and names every part must accept: one table, used by the unit
tier (the pack validator and ``ops.paths``) and the nodes tier (the real CharpackSavePack)."""

from __future__ import annotations

HOSTILE = [
    "cafe\n", "cafe\r\n", "\ncafe", "cafe ", " cafe", "cafe.", "cafe..", ".", "..",
    "con", "CON", "nul", "Nul.png", "aux.txt", "prn.tar.gz", "com1", "COM9.json", "com0",
    "lpt1", "LPT9.x", "lpt0", "com\u00b9", "lpt\u00b2.txt", "conin$", "CONOUT$", "con .txt",
    "a/b", "a\\b", "c:evil", "what?", "star*", 'quote"', "<tag>", "pipe|",
    "nul\x00byte", "bell\x07", "tab\tname", "del\x7f", "zero\u200bwidth", "\u202eevil",
    "line\u2028sep", "lone\ud800surrogate", "", "   ",
    "a" * 121, "\u00e9" * 61,  # 122 bytes in UTF-8
]  # fmt: skip
# Names both accept: the saver takes more (spaces, non-ASCII) than a pack's portable names.
ORDINARY = ["harbour", "cafe-terrace", "Beach_2", "v1.2", "a" * 64, "con1", "console", "nul-2"]
