"""The Python-docs reader on this interpreter's own standard library."""

from __future__ import annotations

import json
import pydoc_data.topics
import sysconfig
from pathlib import Path

from llamafoundry.data.sources.pydocs import PythonDocsReader, module_docstring


def test_help_topics_and_module_docstrings_of_the_stdlib():
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    reader = PythonDocsReader(exclude=["site-packages/*", "test/*"])
    docs = {d.id: d for d in reader.read(stdlib)}
    topics = pydoc_data.topics.topics
    assert sum(d.meta["kind"] == "topic" for d in docs.values()) == len(topics)
    assert docs["pydocs:topic/assert"].text == topics["assert"].strip()
    # The module docstring read from the tokens equals what importing the module gives.
    assert docs["pydocs:module/json"].text == json.__doc__.strip()
    assert docs["pydocs:module/json"].meta == {
        "kind": "module docstring",
        "module": "json",
        "path": "json/__init__.py",
    }
    assert not any(d.meta.get("path", "").startswith(("test/", "site-packages/")) for d in docs.values())


def test_module_docstring_edge_cases():
    assert module_docstring(b'#!/usr/bin/env python\n# coding: utf-8\n"""Doc."""\nx = 1\n') == "Doc."
    assert module_docstring(b"import os\n'''not a docstring'''\n") is None
    assert module_docstring(b"b'bytes are no docstring'\n") is None
    assert module_docstring(b'"""unterminated\n') is None
