"""One folding of names, used both when the gazetteer is imported and when a query arrives, so
that what a user types meets what was stored: case, accents and look-alike punctuation fold away.
"""

from __future__ import annotations

import sys
import unicodedata
from functools import lru_cache

# Letters that carry their "accent" in the letter itself, so NFKD leaves them whole; people type
# them as the plain letter (lodz for Łódź, orebro for Örebro is already handled by NFKD).
_LETTERS = {"ł": "l", "ø": "o", "đ": "d", "ð": "d", "ħ": "h", "ı": "i", "ŧ": "t", "ŀ": "l"}
# Apostrophe look-alikes become ', and a hyphen is a space ("saint etienne" finds Saint-Étienne).
_PUNCTUATION = {"’": "'", "‘": "'", "ʼ": "'", "ʻ": "'", "`": "'", "-": " "}

_FOLD = str.maketrans(
    {
        **{cp: None for cp in range(sys.maxunicode + 1) if unicodedata.combining(chr(cp))},
        **_LETTERS,
        **_PUNCTUATION,
    }
)


def fold(text: str) -> str:
    """The search form of a name: NFKD, combining marks dropped, casefolded (ß -> ss),
    apostrophes unified, runs of white space folded to one space and trimmed."""
    if text.isascii():
        # Most names are ASCII; str.replace is several times faster than str.translate here.
        return " ".join(text.lower().replace("-", " ").replace("`", "'").split())
    # NFKD both before casefolding (ℌ -> H -> h) and after it (ǅ -> ǆ -> dž -> dz).
    text = unicodedata.normalize("NFKD", unicodedata.normalize("NFKD", text).casefold())
    return " ".join(text.translate(_FOLD).split())


# The names of the cities a search shows come back again and again; the import folds millions
# once each and uses ``fold``.
@lru_cache(maxsize=16_384)
def fold_name(name: str) -> str:
    """``fold(name)``, remembered for a stored name read back at query time."""
    return fold(name)
