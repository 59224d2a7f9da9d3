"""The arXiv reader: a LaTeX project with macros, comments, an \\input file and a bibliography, as a
folder and as arXiv's tarball, turned into the paper's cleaned LaTeX exactly."""

from __future__ import annotations

import io
import tarfile

import pytest

from llamafoundry.data.sources.arxiv import ArxivReader, expand_macros, parse_macros

MAIN = r"""\documentclass[11pt]{article}
\usepackage{amsmath,amssymb}
\newcommand{\R}{\mathbb{R}}
\newcommand{\norm}[1]{\left\| #1 \right\|}
\renewcommand{\vec}[1]{\mathbf{#1}}
\newcommand{\pair}[2]{(#1, #2)}
\def\eps{\varepsilon}
\newcommand\model{LLaMA}
\title{Open and Efficient Foundation Language Models}
\begin{document}
\maketitle
\begin{abstract}
We introduce \model{}, a collection of foundation models.
\end{abstract}
% The introduction starts here.
\section{Introduction}
The \model{} model maps $\vec{x} \in \R^d$ to % a trailing comment
the pair $\pair{\vec{x}}{y}$ with $\norm{\vec{x}} < \eps$.
We follow \cite{hoffmann2022}; costs fall by 5\% here.
\input{sections/method}
\begin{comment}
Text the authors hid.
\end{comment}
\bibliographystyle{plain}
\bibliography{refs}
\begin{thebibliography}{9}
\bibitem{hoffmann2022} J. Hoffmann et al. Training compute-optimal large language models. 2022.
\end{thebibliography}
\end{document}
"""
METHOD = r"""\section{Method}
% TODO: tighten.
We train \model\ on $\R^{n}$ data only.
"""
EXPECTED = r"""\section{Introduction}
The LLaMA{} model maps $\mathbf{x} \in \mathbb{R}^d$ to
the pair $(\mathbf{x}, y)$ with $\left\| \mathbf{x} \right\| < \varepsilon$.
We follow \cite{hoffmann2022}; costs fall by 5\% here.
\section{Method}
We train LLaMA\ on $\mathbb{R}^{n}$ data only."""


def _write_project(folder):
    (folder / "sections").mkdir(parents=True)
    (folder / "main.tex").write_text(MAIN)
    (folder / "sections" / "method.tex").write_text(METHOD)
    (folder / "refs.bib").write_text("@article{hoffmann2022, title={Chinchilla}}\n")


def test_latex_folder_becomes_the_cleaned_text(tmp_path):
    paper = tmp_path / "2302.13971"
    _write_project(paper)
    docs = list(ArxivReader().read(paper))
    assert len(docs) == 1
    assert docs[0].text == EXPECTED
    assert docs[0].id == "arxiv:2302.13971"
    assert docs[0].meta == {"paper": "2302.13971", "files": ["main.tex", "sections/method.tex"]}


def test_tarballs_in_a_folder_and_a_truncated_one(tmp_path):
    project = tmp_path / "project"
    _write_project(project)
    papers = tmp_path / "papers"
    papers.mkdir()
    with tarfile.open(papers / "2302.13971.tar.gz", "w:gz") as tar:
        tar.add(project, arcname=".")
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        payload = (MAIN * 200).encode()
        info = tarfile.TarInfo("main.tex")
        info.size = len(payload)
        tar.addfile(info, io.BytesIO(payload))
    (papers / "2303.00001.tar.gz").write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    reader = ArxivReader()
    docs = list(reader.read(papers))
    assert [d.id for d in docs] == ["arxiv:2302.13971"]
    assert docs[0].text == EXPECTED
    assert reader.stats.dropped == {"truncated or corrupt archive": 1}


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        (r"\def\a#1#2{<#2|#1>}\a{x}{y}", "<y|x>"),
        (r"\newcommand{\b}{B}\newcommand{\bb}{\b\b}\bb", "BB"),  # nested macros expand fully
        (r"\newcommand{\x}{X}\xyz \x", r"\xyz X"),  # \xyz is another control word
        (r"\newcommand{\opt}[2][d]{#1-#2}\opt{v} \opt[w]{v}", "d-v w-v"),  # optional first argument
    ],
)
def test_macro_expansion_cases(source, expected):
    macros, rest = parse_macros(source)
    assert expand_macros(rest, macros) == expected
