"""The Wikipedia reader on the real dump sample and on bz2 MediaWiki dumps written here."""

from __future__ import annotations

import bz2

from llamafoundry.data.sources.wikipedia import WikipediaReader

DUMP = (
    "corpora/wikipedia_xml_dump_sample/enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"
)

HEADER = """<mediawiki xmlns="http://www.mediawiki.org/xml/export-0.11/" version="0.11" xml:lang="fr">
  <siteinfo>
    <sitename>Wikipédia</sitename>
    <dbname>frwiki</dbname>
    <base>https://fr.wikipedia.org/wiki/Wikip%C3%A9dia:Accueil_principal</base>
    <namespaces>
      <namespace key="0" case="first-letter" />
      <namespace key="6" case="first-letter">Fichier</namespace>
      <namespace key="14" case="first-letter">Catégorie</namespace>
    </namespaces>
  </siteinfo>
"""


def _page(page_id: int, title: str, wikitext: str, ns: int = 0, redirect: bool = False) -> str:
    from xml.sax.saxutils import escape

    return f"""  <page>
    <title>{escape(title)}</title>
    <ns>{ns}</ns>
    <id>{page_id}</id>{'<redirect title="X" />' if redirect else ""}
    <revision>
      <id>{page_id * 10}</id>
      <model>wikitext</model>
      <format>text/x-wiki</format>
      <text bytes="{len(wikitext)}" xml:space="preserve">{escape(wikitext)}</text>
    </revision>
  </page>
"""


LYON = """{{Infobox Commune de France|nom=Lyon|région=Auvergne-Rhône-Alpes}}
'''Lyon''' est une [[commune française]] située au confluent du [[Rhône (fleuve)|Rhône]] et de la [[Saône]].<ref>{{Lien web|titre=Insee}}</ref>
<!-- ne pas modifier sans consensus -->
[[Fichier:Lyon vue.jpg|vignette|La ville vue de Fourvière]]
== Histoire ==
La ville est fondée en {{-s|I}} sous le nom de ''Lugdunum''. Voir [https://www.lyon.fr le site officiel].
{| class="wikitable"
|-
! Année !! Population
|-
| 2020 || 522 250
|}
=== Antiquité ===
* capitale des Gaules ;
* ville romaine.
== See also ==
* [[Villeurbanne]]
[[Catégorie:Commune du Rhône]]
[[en:Lyon]]"""

LYON_TEXT = """Lyon est une commune française située au confluent du Rhône et de la Saône.

Histoire

La ville est fondée en  sous le nom de Lugdunum. Voir le site officiel.

Antiquité

capitale des Gaules ;
ville romaine."""


def test_wikitext_becomes_prose_exactly(tmp_path):
    path = tmp_path / "frwiki-20220701-pages-articles.xml.bz2"
    xml = HEADER + _page(1, "Lyon", LYON) + _page(2, "Lugdunum", "#REDIRECT [[Lyon]]", redirect=True)
    xml += _page(3, "Modèle:Infobox", "{{{nom}}}", ns=10) + "</mediawiki>\n"
    path.write_bytes(bz2.compress(xml.encode()))
    reader = WikipediaReader()
    docs = list(reader.read(path))
    assert len(docs) == 1  # the redirect and the template page are no articles
    doc = docs[0]
    assert doc.text == LYON_TEXT
    assert doc.id == "frwiki:1"
    assert doc.meta == {
        "title": "Lyon",
        "url": "https://fr.wikipedia.org/wiki/Lyon",
        "revision_id": "10",
        "language": "fr",
    }
    assert not reader.stats.dropped


def test_dump_cut_mid_page_keeps_the_pages_before(tmp_path):
    path = tmp_path / "cut.xml.bz2"
    pages = "".join(_page(i, f"Page {i}", f"Texte de la page {i}.") for i in range(1, 6))
    xml = (HEADER + pages + "</mediawiki>\n").encode()
    cut = xml.index(b"<title>Page 4</title>") + 30
    path.write_bytes(bz2.compress(xml[:cut]))
    reader = WikipediaReader()
    docs = list(reader.read(path))
    assert [d.text for d in docs] == ["Texte de la page 1.", "Texte de la page 2.", "Texte de la page 3."]
    assert list(reader.stats.dropped) == ["truncated or malformed XML"]


def test_truncated_bz2_stream_keeps_the_pages_before(tmp_path):
    path = tmp_path / "cut-stream.xml.bz2"
    # bz2 works in blocks of 900 kB of input: 2.7 MB of pages make several, and the cut falls in a later one.
    pages = "".join(_page(i, f"Page {i}", f"Texte de la page numéro {i}. " * 1000) for i in range(1, 91))
    data = bz2.compress((HEADER + pages + "</mediawiki>\n").encode())
    path.write_bytes(data[: len(data) * 6 // 10])
    reader = WikipediaReader()
    docs = list(reader.read(path))
    assert 0 < len(docs) < 90
    assert [d.id for d in docs] == [f"frwiki:{i}" for i in range(1, len(docs) + 1)]
    assert reader.stats.dropped == {"truncated or corrupt file": 1}


def test_real_enwiki_dump_sample(shared_data):
    reader = WikipediaReader()
    docs = list(reader.read(shared_data / DUMP))
    # 206 pages, 100 of them redirects: the 106 articles remain.
    assert len(docs) == 106
    anarchism = docs[0]
    assert anarchism.id == "enwiki:12"
    assert anarchism.meta["title"] == "Anarchism"
    assert anarchism.meta["url"] == "https://en.wikipedia.org/wiki/Anarchism"
    assert anarchism.text.startswith(
        "Anarchism is a political philosophy that advocates self-governed societies based on voluntary "
        "institutions. These are often described as stateless societies,"
    )
    for doc in docs:
        assert "[[" not in doc.text and "{{" not in doc.text and "<ref" not in doc.text
        assert "''" not in doc.text and "<!--" not in doc.text and "{|" not in doc.text
        assert "\nReferences\n" not in doc.text
    assert not reader.stats.dropped
