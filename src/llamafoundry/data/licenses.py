"""Which license a repository's LICENSE/COPYING file states, as an SPDX id (Sec. 2.1, GitHub: the paper
kept only projects under the Apache, BSD and MIT licenses).

askalono (the license matcher behind cargo-deny, with the SPDX license texts built in) compares the whole
file with every SPDX license; a file that matches nothing well enough, but carries an
`SPDX-License-Identifier:` line, gets that id instead.
"""

from __future__ import annotations

import fnmatch
import functools
import re

# askalono's own command line reports a match from this score on.
MIN_SCORE = 0.8
UNKNOWN = "unknown"
# The paper's three permissive families (Table 1). A recipe may allow more: see configs/data/quickstart.toml.
PAPER_ALLOWED = ("MIT", "MIT-*", "BSD-*", "0BSD", "Apache-*")

LICENSE_FILE = re.compile(
    r"^(licen[cs]e|copying)(-[a-z0-9.]+?)?(\.(txt|md|rst|markdown|lesser))?$", re.IGNORECASE
)
_SPDX_LINE = re.compile(r"SPDX-License-Identifier:\s*([\w.+() -]+)")


def is_license_file(name: str) -> bool:
    """LICENSE, LICENSE.txt, LICENCE.md, COPYING, LICENSE-MIT ... (case-insensitive)."""
    return LICENSE_FILE.match(name) is not None


@functools.lru_cache(maxsize=4096)
def identify_license(text: str) -> str:
    """The SPDX id of the license in `text`, or "unknown"."""
    import askalono

    try:
        match = askalono.identify(text)
    except (ValueError, RuntimeError):
        match = None
    if match is not None and match.score >= MIN_SCORE:
        return match.name
    spdx = _SPDX_LINE.search(text)
    return spdx.group(1).strip() if spdx else UNKNOWN


def is_allowed(expression: str, allowed: tuple[str, ...] | list[str] = PAPER_ALLOWED) -> bool:
    """True when one alternative of the SPDX expression ("MIT OR Apache-2.0", "MIT AND BSD-3-Clause")
    has all its licenses matching the `allowed` glob patterns: a user may take a dual-licensed project
    under either license, but must honour every license of a combination."""

    def ok(license_id: str) -> bool:
        return any(fnmatch.fnmatchcase(license_id, pattern) for pattern in allowed)

    for alternative in re.split(r"\s+OR\s+", expression.replace("(", " ").replace(")", " ")):
        ids = [w for w in re.split(r"\s+AND\s+|\s+WITH\s+\S+", alternative.strip()) if w.strip()]
        if ids and all(ok(i.strip()) for i in ids):
            return True
    return False
