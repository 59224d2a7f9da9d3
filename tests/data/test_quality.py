"""C4's heuristics and the GitHub heuristics."""

from __future__ import annotations

import pytest

from llamafoundry.data.document import Document
from llamafoundry.data.filters.quality import C4Quality, CodeQuality, LicenseHeaderStrip

PAGE = """Skip to main content
Menu
The Ebro is the longest river entirely in Spain.[1] It flows into the Mediterranean Sea.
It drains a basin of 85,000 square kilometres.
Its delta is one of the largest wetlands of the western Mediterranean!
Please enable JavaScript to view the comments.
This site uses cookies to improve your experience.
Read more...
Why does the river carry so much sediment? Dams hold most of it back today.
Share on
"The river is the life of the valley," said a farmer."""

PAGE_KEPT = """The Ebro is the longest river entirely in Spain. It flows into the Mediterranean Sea.
It drains a basin of 85,000 square kilometres.
Its delta is one of the largest wetlands of the western Mediterranean!
Why does the river carry so much sediment? Dams hold most of it back today.
"The river is the life of the valley," said a farmer."""


def _run(stage, text):
    out = list(stage([Document("d", text, "c4", {})]))
    return out[0].text if out else None


def test_c4_line_rules_and_sentence_count():
    stage = C4Quality()
    assert _run(stage, PAGE) == PAGE_KEPT
    assert stage.stats.tallies["lines removed"] == 6


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (PAGE + "\nLorem ipsum dolor sit amet, consectetur adipiscing elit.", "lorem ipsum"),
        (PAGE + "\nfunction f() { return 1; }", "curly bracket"),
        ("One short line here.\nAnother fine sentence here.\nNo more.", "too few sentences"),
    ],
)
def test_c4_page_rules(text, reason):
    stage = C4Quality()
    assert _run(stage, text) is None
    assert stage.stats.dropped == {reason: 1}


def test_c4_bad_words_file(tmp_path):
    words = tmp_path / "badwords.txt"
    words.write_text("darn\nheck off\n")
    stage = C4Quality(badwords=str(words))
    assert _run(stage, PAGE_KEPT) == PAGE_KEPT
    assert _run(stage, PAGE_KEPT + "\nWell, heck off then, said the other one.") is None
    assert _run(stage, PAGE_KEPT.replace("farmer", "darned farmer")) == PAGE_KEPT.replace(
        "farmer", "darned farmer"
    )
    assert stage.stats.dropped == {"bad word": 1}


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("x = 1\n" + "y" * 1200 + "\n", "line too long"),
        (("a = '" + "b" * 150 + "'\n") * 3, "mean line too long"),
        ("#" * 50 + "\n" + "-+-+" * 20 + "\nx\n", "too few alphanumeric characters"),
        ("   \n\n", "empty file"),
    ],
)
def test_code_heuristics_drop(text, reason):
    stage = CodeQuality()
    assert _run(stage, text) is None
    assert stage.stats.dropped == {reason: 1}


def test_code_heuristics_keep_ordinary_code():
    code = "def add(a, b):\n    return a + b\n"
    assert _run(CodeQuality(), code) == code


def test_license_headers_are_removed_and_code_stays():
    python = "#!/usr/bin/env python3\n# Copyright (c) 2021 Ada\n# SPDX-License-Identifier: MIT\n\nimport os\n"
    c = "/*\n * Copyright 2020 The Authors.\n * Licensed under the Apache License, Version 2.0.\n */\n#include <stdio.h>\nint x;\n"
    c_lines = "// Copyright 2020 Foo\n#include <stdlib.h>\nint y;\n"
    plain = "# A helper that adds numbers.\nimport os\n"
    stage = LicenseHeaderStrip()
    assert _run(stage, python) == "#!/usr/bin/env python3\nimport os\n"
    assert _run(stage, c) == "#include <stdio.h>\nint x;\n"
    assert _run(stage, c_lines) == "#include <stdlib.h>\nint y;\n"
    assert _run(stage, plain) == plain  # a comment that is no license stays
    assert stage.stats.tallies["headers removed"] == 3
