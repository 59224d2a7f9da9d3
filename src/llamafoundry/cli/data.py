"""Data commands: `data run` (a recipe: read, filter, write shards and a report),
`data train-reference-lm` (the perplexity filter's model, from Wikipedia dumps),
`data wiki-references` (the classifier's training pages) and `data train-classifier` (the
Wikipedia-reference classifier)."""

from __future__ import annotations

import argparse
from pathlib import Path

from llamafoundry.cli.options import add_output, check_at_least, warn_deprecated


def register(subparsers: argparse._SubParsersAction) -> None:
    group = subparsers.add_parser("data", help="build a pretraining corpus from public sources (Sec. 2.1)")
    commands = group.add_subparsers(dest="data_command", metavar="SUBCOMMAND", required=True)

    p = commands.add_parser("run", help="run a data recipe (configs/data/*.toml)")
    p.add_argument("recipe", type=Path, help="a TOML recipe, e.g. configs/data/quickstart.toml")
    p.add_argument("--executor", choices=["local", "ray"], help="local process pool (default) or Ray")
    p.add_argument("--workers", type=int, help="parallel workers (default: [run] workers, else all CPUs)")
    add_output(
        p, "output folder (default: the recipe's [run] output); a re-run resumes in it", overwrite=False
    )
    p.add_argument("--ray-address", help="join this Ray cluster (e.g. 'auto') instead of starting one")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_run)

    p = commands.add_parser(
        "train-classifier",
        help="train the Wikipedia-reference classifier (fastText) for the wiki_classifier stage",
    )
    p.add_argument(
        "--positive",
        nargs="+",
        type=Path,
        required=True,
        help="documents like Wikipedia's references: .jsonl(.zst/.gz) shards, or .txt (one per line)",
    )
    p.add_argument("--negative", nargs="+", type=Path, required=True, help="random pages, same formats")
    add_output(p, "where to write the model (.bin)", required=True)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--lr", type=float, default=0.5)
    p.add_argument("--word-ngrams", type=int, default=2)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument(
        "--compress",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="quantize the model (fastText's product quantization): about 1 MB instead of 512 MB (default)",
    )
    p.add_argument(
        "--cutoff", type=int, default=20_000, help="words and n-gram buckets a compressed model keeps"
    )
    # --quantize names a weight format on every command that loads a model; here it was a yes/no.
    p.add_argument("--quantize", dest="old_quantize", action="store_true", help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_train_classifier)

    p = commands.add_parser(
        "train-reference-lm",
        help="build the perplexity stage's reference model (CCNet's) from Wikipedia dumps",
        description="From the cleaned articles of Wikipedia dumps (one language), write CCNet's reference "
        "language model into a folder: <lang>.sp.model (SentencePiece) and <lang>.arpa (an n-gram model "
        "over its pieces, interpolated modified Kneser-Ney as KenLM's lmplz estimates it). Give them to "
        "the perplexity stage as `tokenizer` and `model`.",
    )
    p.add_argument("dumps", nargs="+", type=Path, metavar="DUMP", help="*-pages-articles*.xml(.bz2) dumps")
    add_output(p, "folder to write the models into", required=True)
    p.add_argument("--order", type=int, default=5, help="n-gram order (default: 5, CCNet's)")
    p.add_argument("--vocab-size", type=int, default=32000, help="SentencePiece pieces (default: 32000)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_train_reference_lm)

    p = commands.add_parser(
        "wiki-references",
        help="pages cited by Wikipedia (and random pages) from a crawl, for train-classifier",
        description="The external URLs that a Wikipedia dump's articles cite ({{cite ...}} templates' url, "
        "links in <ref> tags). Without --crawl: the URLs, one per line (to look up in a crawl index). With "
        "--crawl: the crawl's pages at those URLs as JSONL positives (-o), and random uncited pages as "
        "negatives, the two files `data train-classifier --positive/--negative` takes.",
    )
    p.add_argument("dumps", nargs="+", type=Path, help="MediaWiki XML dumps (.xml, .bz2, .gz)")
    p.add_argument(
        "--crawl", nargs="+", type=Path, help="CommonCrawl WET or WARC files to collect pages from"
    )
    add_output(p, "the URL list, or with --crawl the positives (.jsonl)", required=True)
    p.add_argument(
        "--negative-output", type=Path, help="where the negatives go (default: <output>-random.jsonl)"
    )
    p.add_argument("--negatives", type=int, default=10_000, help="random pages to sample (default 10000)")
    p.add_argument("--seed", type=int, default=0, help="seed of the negatives' sample")
    p.set_defaults(func=cmd_wiki_references)

    p = commands.add_parser(
        "tokenize",
        help="tokenize documents into token shards for training",
        description="Tokenize .jsonl(.gz/.zst) documents or plain text files into token shards (one per file "
        "and split) with a manifest. Files are grouped by source: SOURCE=FILE, or a folder of `data run` "
        "output (<output>/<source>/*.jsonl.zst).",
    )
    p.add_argument("inputs", nargs="+", help="FILE, SOURCE=FILE, or a `data run` output folder")
    p.add_argument("--tokenizer", type=Path, required=True, help="SentencePiece tokenizer.model")
    add_output(p, "token shard folder to write", required=True)
    p.add_argument("--val-fraction", type=float, default=0.005, help="documents held out for validation")
    p.add_argument("--workers", type=int, default=None, help="parallel processes (default: all CPUs)")
    p.add_argument(
        "--doc-separator", default=None, help="split plain text files into documents at this string"
    )
    p.set_defaults(func=cmd_tokenize)


def cmd_tokenize(args: argparse.Namespace) -> None:
    from llamafoundry.data.shards import build_shards, group_inputs
    from llamafoundry.errors import UserError

    check_at_least(args, 1, "workers")
    if args.doc_separator == "":
        raise UserError("--doc-separator is empty; give the string that ends each document")
    manifest = build_shards(
        group_inputs(args.inputs),
        args.tokenizer,
        args.output,
        val_fraction=args.val_fraction,
        workers=args.workers,
        doc_separator=args.doc_separator,
        overwrite=args.overwrite,
    )
    for split, sources in manifest["splits"].items():
        for source, shards in sources.items():
            print(f"{split}/{source}: {sum(s['tokens'] for s in shards):,} tokens in {len(shards)} shards")
    print(f"wrote {args.output}")


def cmd_run(args: argparse.Namespace) -> None:
    from llamafoundry.data.pipeline import run_recipe
    from llamafoundry.data.recipe import load_recipe
    from llamafoundry.errors import UserError

    if args.workers is not None and args.workers < 1:
        raise UserError("--workers must be at least 1")
    recipe = load_recipe(args.recipe, args.output)
    report = run_recipe(recipe, args.executor, args.workers, args.ray_address, show_progress=not args.quiet)
    for name, src in report["sources"].items():
        print(
            f"{name}: {src['docs_out']:,} documents, {src['bytes_out'] / 1e6:,.2f} MB "
            f"({src['shards']} shards)"
        )
    print(f"wrote {recipe.output} (report: {recipe.output / 'report.md'})")


def cmd_train_reference_lm(args: argparse.Namespace) -> None:
    from llamafoundry.data.reference_lm import train_reference_lm
    from llamafoundry.data.sources.wikipedia import WikipediaReader
    from llamafoundry.errors import UserError
    from llamafoundry.tokenizer import MIN_VOCAB_SIZE

    check_at_least(args, 2, "order")  # KenLM reads bigram models and up
    check_at_least(args, MIN_VOCAB_SIZE, "vocab_size")
    missing = [str(d) for d in args.dumps if not d.is_file()]
    if missing:
        raise UserError(f"dump not found: {', '.join(missing)}")
    reader = WikipediaReader()
    articles = (doc for dump in args.dumps for doc in reader.read(dump))
    result = train_reference_lm(
        articles,
        args.output,
        order=args.order,
        vocab_size=args.vocab_size,
        overwrite=args.overwrite,
        progress=not args.quiet,
    )
    for reason, count in reader.stats.dropped.items():
        print(f"skipped {count:,} ({reason}), first: {reader.stats.examples[reason]}")
    ngrams = ", ".join(f"{count:,} {n}-grams" for n, count in enumerate(result["ngrams"], 1))
    print(f"{result['pages']:,} articles, {result['lines']:,} lines, {result['pieces']:,} pieces: {ngrams}")
    print(f"wrote {result['model']} and {result['tokenizer']} (the perplexity stage's model and tokenizer)")


def _texts(files: list[Path]):
    from llamafoundry.data.sources.jsonl import JsonlReader
    from llamafoundry.data.textio import strip_suffixes
    from llamafoundry.errors import UserError

    for file in files:
        if not file.is_file():
            raise UserError(f"{file} not found")
        if strip_suffixes(file.name).endswith((".jsonl", ".json")):
            yield from (doc.text for doc in JsonlReader().read(file))
        else:
            yield from (line for line in file.read_text("utf-8", "replace").splitlines() if line.strip())


def cmd_train_classifier(args: argparse.Namespace) -> None:
    from llamafoundry.data.filters.classifier import ClassifierConfig, train_classifier

    if args.old_quantize:
        warn_deprecated("--quantize", "--compress")
    config = ClassifierConfig(
        epochs=args.epochs,
        lr=args.lr,
        word_ngrams=args.word_ngrams,
        dim=args.dim,
        quantize=args.compress or args.old_quantize,
        cutoff=args.cutoff,
    )
    result = train_classifier(
        _texts(args.positive), _texts(args.negative), args.output, config, overwrite=args.overwrite
    )
    print(
        f"wrote {args.output}: {result['positives']:,} positive and {result['negatives']:,} negative "
        f"documents; training precision {result['train_precision']:.3f}"
    )


def cmd_wiki_references(args: argparse.Namespace) -> None:
    from llamafoundry.data.wiki_references import PageCollector, dump_cited_urls, write_pages, write_url_list
    from llamafoundry.errors import UserError

    for path in [*args.dumps, *(args.crawl or [])]:
        if not path.is_file():
            raise UserError(f"{path} not found")
    if args.crawl and not args.output.name.endswith(".jsonl"):
        raise UserError(f"{args.output}: with --crawl the output is JSON Lines; name it *.jsonl")
    check_at_least(args, 0, "negatives")
    cited = dump_cited_urls(args.dumps)
    if not args.crawl:
        write_url_list(cited.values(), args.output, overwrite=args.overwrite)
        print(f"wrote {args.output}: {len(cited):,} cited URLs")
        return
    negative_output = args.negative_output or args.output.with_name(args.output.name[:-6] + "-random.jsonl")
    if negative_output.resolve() == args.output.resolve():
        raise UserError(f"--negative-output is the output {args.output}; give the negatives their own file")
    collector = PageCollector(cited, args.negatives, args.seed)
    write_pages(collector, args.crawl, args.output, negative_output, overwrite=args.overwrite)
    print(
        f"{len(cited):,} cited URLs; {len(collector.found):,} of them among {collector.pages:,} crawl pages\n"
        f"wrote {args.output} ({len(collector.found):,} pages) and {negative_output} "
        f"({len(collector.negatives):,} random pages)\n"
        f"next: llamafoundry data train-classifier --positive {args.output} --negative {negative_output} "
        "-o wiki_classifier.bin"
    )
