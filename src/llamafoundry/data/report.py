"""The run report: per source, documents and bytes in and out of the reader and of every stage, why
documents were dropped, the languages seen; as `report.json`, `report.md` and a bar chart `report.png`."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llamafoundry.data.stage import ShardResult, StageStats
from llamafoundry.fileio import atomic_path, write_json, write_text

if TYPE_CHECKING:
    from llamafoundry.data.recipe import Recipe

LANGUAGE_TALLY = "language "


def summarize(recipe: Recipe, results: list[ShardResult]) -> dict[str, Any]:
    """Shard results merged per source (in recipe order)."""
    sources: dict[str, Any] = {}
    for name in recipe.sources:
        mine = [r for r in results if r.source == name]
        if not mine:
            continue
        merged = [StageStats(s.name) for s in mine[0].stats]
        for r in mine:
            for total, part in zip(merged, r.stats, strict=True):
                total.merge(part)
        languages = Counter()
        for s in merged:
            languages.update(
                {k[len(LANGUAGE_TALLY) :]: v for k, v in s.tallies.items() if k.startswith(LANGUAGE_TALLY)}
            )
        sources[name] = {
            "shards": len(mine),
            "shards_skipped_as_finished": sum(r.skipped for r in mine),
            "stages": [s.to_dict() for s in merged],
            "docs_out": merged[-1].docs_out,
            "bytes_out": merged[-1].bytes_out,
            "languages": dict(languages.most_common()),
        }
        buckets = perplexity_buckets(recipe.sources[name].stages)
        if buckets:
            sources[name]["perplexity_buckets"] = buckets
    mixture = {k: {"weight": v.weight, "epochs": v.epochs} for k, v in (recipe.mixture or {}).items()}
    return {"recipe": str(recipe.path), "output": str(recipe.output), "sources": sources, "mixture": mixture}


def perplexity_buckets(stages: list) -> list[dict[str, Any]]:
    """Where each perplexity stage cut its buckets: the percentiles, the perplexities there (measured on
    the sample pass, or given), the sample size asked for and the buckets kept."""
    from llamafoundry.data.filters.perplexity import BUCKETS, SAMPLE_DOCS

    return [
        {
            "percentiles": s.options.get("percentiles"),
            "cutoffs": s.options["cutoffs"],
            "sample_docs": s.options.get("sample_docs", SAMPLE_DOCS)
            if s.options.get("percentiles")
            else None,
            "keep": list(s.options.get("keep", BUCKETS)),
        }
        for s in stages
        if s.name == "perplexity" and s.options.get("cutoffs")
    ]


def _bucket_line(b: dict[str, Any]) -> str:
    head, tail = b["cutoffs"]
    where = (
        f"percentiles {b['percentiles'][0]:g} and {b['percentiles'][1]:g} of a sample of up to "
        f"{b['sample_docs']:,} documents"
        if b["percentiles"]
        else "given"
    )
    return (
        f"Perplexity buckets: head < {head:,.1f} <= middle < {tail:,.1f} <= tail ({where}); "
        f"kept: {', '.join(b['keep'])}"
    )


def _mb(n: int) -> str:
    return f"{n / 1e6:,.2f}"


def _counted(stage: dict[str, Any]) -> str:
    """A stage's tallies (lines removed, perplexity buckets, ...) but languages, which get their own line."""
    tallies = stage["tallies"].items()
    return "; ".join(f"{k}: {v:,}" for k, v in tallies if not k.startswith(LANGUAGE_TALLY))


def to_markdown(report: dict[str, Any]) -> str:
    """The report as markdown tables, one per source."""
    lines = [f"# Data run: {report['recipe']}", "", f"Output: `{report['output']}`", ""]
    for name, src in report["sources"].items():
        lines += [
            f"## {name}",
            "",
            f"{src['shards']} shards ({src['shards_skipped_as_finished']} already finished); "
            f"{src['docs_out']:,} documents, {_mb(src['bytes_out'])} MB out.",
            "",
            "| step | docs in | docs out | MB in | MB out | dropped (why) | counted |",
            "|---|---:|---:|---:|---:|---|---|",
        ]
        for s in src["stages"]:
            why = "; ".join(
                f"{reason}: {count:,}"
                for reason, count in sorted(s["dropped"].items(), key=lambda kv: -kv[1])[:6]
            )
            lines.append(
                f"| {s['name']} | {s['docs_in']:,} | {s['docs_out']:,} | {_mb(s['bytes_in'])} | "
                f"{_mb(s['bytes_out'])} | {why} | {_counted(s)} |"
            )
        examples = [(s["name"], r, w) for s in src["stages"] for r, w in s["examples"].items()]
        if examples:
            lines += ["", "Skipped input, first case of each:", ""]
            lines += [f"- {step}, {reason}: `{where}`" for step, reason, where in examples]
        if src["languages"]:
            top = ", ".join(f"{k} {v:,}" for k, v in list(src["languages"].items())[:12])
            lines += ["", f"Languages (documents): {top}"]
        for buckets in src.get("perplexity_buckets", []):
            lines += ["", _bucket_line(buckets)]
        lines.append("")
    if report["mixture"]:
        lines += ["## Mixture (Table 1)", "", "| source | weight | epochs |", "|---|---:|---:|"]
        lines += [
            f"| {k} | {v['weight']:.3f} | {v['epochs'] if v['epochs'] is not None else ''} |"
            for k, v in report["mixture"].items()
        ]
        lines.append("")
    return "\n".join(lines)


def plot(report: dict[str, Any], path: Path) -> None:
    """One panel per source: MB left after reading and after each stage."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sources = report["sources"]
    fig, axes = plt.subplots(len(sources), 1, figsize=(8, 1.2 + 1.6 * len(sources)), squeeze=False)
    for ax, (name, src) in zip(axes[:, 0], sources.items(), strict=True):
        steps = [s["name"] for s in src["stages"]]
        mbs = [s["bytes_out"] / 1e6 for s in src["stages"]]
        bars = ax.barh(steps[::-1], mbs[::-1], color="#4C72B0")
        ax.bar_label(bars, labels=[f"{m:,.1f} MB" for m in mbs[::-1]], padding=3, fontsize=8)
        ax.set_title(name, loc="left", fontsize=10)
        ax.set_xlim(0, max(mbs + [1e-9]) * 1.25)
        ax.tick_params(labelsize=8)
    axes[-1, 0].set_xlabel("MB of text after each step")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def write_pipeline_report(recipe: Recipe, results: list[ShardResult]) -> dict[str, Any]:
    """Write report.json, report.md and report.png into the output folder; return the report."""
    report = summarize(recipe, results)
    write_json(recipe.output / "report.json", report)
    write_text(recipe.output / "report.md", to_markdown(report))
    if report["sources"]:
        plot(report, recipe.output / "report.png")
    return report
