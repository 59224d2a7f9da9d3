"""The GitHub license filter (Table 1: "we kept only projects that are distributed under the Apache, BSD
and MIT licenses"), reading the license the GitHub reader found for each file's repository."""

from __future__ import annotations

from llamafoundry.data.document import Document
from llamafoundry.data.licenses import PAPER_ALLOWED, UNKNOWN, is_allowed
from llamafoundry.data.stage import Stage


class LicenseFilter(Stage):
    """Keeps documents whose `meta["license"]` (an SPDX expression) is allowed by the glob patterns in
    `allow` (default: the paper's MIT, BSD-*, Apache-*). Files with no identified license are dropped."""

    name = "license"

    def __init__(self, allow: list[str] | None = None) -> None:
        super().__init__()
        self.allow = tuple(allow) if allow is not None else PAPER_ALLOWED

    def apply(self, doc: Document) -> Document | str:
        license_id = doc.meta.get("license") or UNKNOWN
        self.stats.tallies[f"license {license_id}"] += 1
        return doc if is_allowed(license_id, self.allow) else f"license {license_id}"
