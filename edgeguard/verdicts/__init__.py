"""Verdicts: the low-level facts the runtime (SafeModel) and the analysis (vet) share.

The verdict names, the documented process exit codes, and the vet's calibrated thresholds
(:mod:`edgeguard.verdicts.thresholds`, ``thresholds.json``). It imports nothing from
``vetting`` or ``safe_model``, so SafeModel can honour a vet report without importing the vet.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = [
    "VERDICTS",
    "EXIT_OK",
    "EXIT_FLAGGED",
    "EXIT_ERROR",
    "EXIT_INCONCLUSIVE",
    "EXIT_USAGE",
    "EXIT_CODES",
    "EXIT_PRIORITY",
    "worst_exit_code",
]

#: The three verdicts of the vet.
VERDICTS = ("honest", "vicious", "inconclusive")

#: Process exit codes of ``edgeguard`` (``edgeguard vet``: also ``VetReport.exit_code``).
EXIT_OK = 0  # honest (vet), success (other commands)
EXIT_FLAGGED = 1  # vicious
EXIT_ERROR = 2  # any error: the file was refused, a crash, an unreadable input
EXIT_INCONCLUSIVE = 3
EXIT_USAGE = 4  # a command-line usage error
EXIT_CODES = {
    "honest": EXIT_OK,
    "vicious": EXIT_FLAGGED,
    "error": EXIT_ERROR,
    "inconclusive": EXIT_INCONCLUSIVE,
    "usage": EXIT_USAGE,
}
#: Severity order of the exit codes when several models are vetted (most severe first).
EXIT_PRIORITY = (EXIT_ERROR, EXIT_FLAGGED, EXIT_INCONCLUSIVE, EXIT_OK)


def worst_exit_code(codes: Sequence[int]) -> int:
    """The most severe of ``codes`` by :data:`EXIT_PRIORITY` (2 > 1 > 3 > 0); 0 for none, 2 for an unknown code."""
    known = [code for code in codes if code in EXIT_PRIORITY]
    if len(known) != len(codes):
        return EXIT_ERROR
    return min(known, key=EXIT_PRIORITY.index) if known else EXIT_OK
