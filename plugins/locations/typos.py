"""Typo tolerance: a deletion-neighbourhood index (the symmetric-delete idea of SymSpell) over
the folded names, the same on SQLite and PostgreSQL.

Two strings within one edit (insertion, deletion, substitution or transposition of neighbours)
share a string reachable from each by at most one deletion; within two edits, by at most two.
The import stores, for each indexed name, every such deletion of its first KEY_CHARS characters
(a key), and the query looks up its own keys in one indexed read, then checks the names found
with the Damerau-Levenshtein distance (rapidfuzz). Keys come from a prefix only, which keeps
their count per name fixed (8 for one deletion, 29 for two) whatever the name's length; the
distance is checked on the whole name.

Which names: every city's main name with one deletion; two deletions, and the Latin-script
alternate names, for the larger cities only (TWO_EDIT_POPULATION, ALTERNATES_POPULATION):
the whole neighbourhood of every name of cities500 would be 11 million rows.
"""

from __future__ import annotations

from rapidfuzz.distance import DamerauLevenshtein

KEY_CHARS = 7
MIN_CHARS = 4  # queries shorter than this get no typo fallback
TWO_EDITS_FROM = 8  # characters from which two edits are allowed
# Latin-script alternate names (Muenchen, Barcellona) are indexed for cities this big.
ALTERNATES_POPULATION = 300_000
# Two-deletion keys for the names of cities this big; one deletion for the rest.
TWO_EDIT_POPULATION = 50_000
MAX_CANDIDATE_NAMES = 2000  # read from the key index at most
MAX_MATCHED_NAMES = 200  # names within the distance kept, closest first


def allowed_edits(text: str) -> int:
    """0, 1 or 2: how many edits a query of this many characters may be away from a name."""
    letters = len(text.replace(" ", ""))
    if letters >= TWO_EDITS_FROM:
        return 2
    return 1 if letters >= MIN_CHARS else 0


def keys(text: str, edits: int) -> set[str]:
    """The deletion neighbourhood of ``text``'s first KEY_CHARS characters within ``edits``."""
    found = {text[:KEY_CHARS]}
    layer = found
    for _ in range(edits):
        # Slicing beats itertools.combinations here: the import makes millions of keys.
        layer = {
            word[:i] + word[i + 1 :] for word in layer if len(word) > 1 for i in range(len(word))
        }
        found |= layer
    return found


def distance(query: str, name: str, limit: int) -> int | None:
    """The Damerau-Levenshtein distance from ``query`` to ``name`` or to a prefix of it (the
    last word may still be being typed), None beyond ``limit``. A prefix match costs half an
    edit more, so whole names rank first."""
    whole = DamerauLevenshtein.distance(query, name, score_cutoff=limit)
    if whole <= limit:
        return 2 * whole
    if len(name) > len(query):
        best = min(
            DamerauLevenshtein.distance(query, name[:length], score_cutoff=limit)
            for length in range(max(1, len(query) - limit), min(len(name), len(query) + limit) + 1)
        )
        if best <= limit:
            return 2 * best + 1
    return None


def is_latin(name: str) -> bool:
    return name.isascii()


def index_rows(names_of_city: list[tuple[str, bool]], population: int) -> set[tuple[str, str]]:
    """(key, folded name) rows for one city's names, given as (folded, is_main)."""
    rows: set[tuple[str, str]] = set()
    alternates = population >= ALTERNATES_POPULATION
    for folded, is_main in names_of_city:
        if len(folded) < MIN_CHARS - 1:
            continue
        if is_main:
            edits = 2 if population >= TWO_EDIT_POPULATION else 1
        elif alternates and is_latin(folded):
            edits = 1
        else:
            continue
        rows.update((key, folded) for key in keys(folded, edits))
    return rows
