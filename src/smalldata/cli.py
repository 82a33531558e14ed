"""The `smalldata` command: thin Typer commands over the library.

Start-up (`smalldata --help`, and parsing any command) imports only Typer, Rich and smalldata's
light modules: each command imports the library it needs (torch, scikit-learn, ONNX Runtime) when
it runs. tests/test_cli.py checks that importing this module loads none of them.
"""

from __future__ import annotations

import json
import os
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from smalldata.deadline import DEFAULT_BUDGET, parse_budget
from smalldata.defaults import DEFAULT_HEAD
from smalldata.errors import DataError, ImageFileError, ModelFolderError
from smalldata.progress import Progress
from smalldata.text_utils import shorten

if TYPE_CHECKING:
    from smalldata.curve import LearningCurve
    from smalldata.data import Dataset
    from smalldata.evaluate import Comparison, TestResult
    from smalldata.model import Model

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Few-shot image and text classification: train, evaluate, predict, on a CPU and offline.")
out = Console()
err = Console(stderr=True)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
SKIPPED_SHOWN = 10
# What the commands print as the user's to fix (a one-line message, exit status 2). Nothing else is
# caught: a bug shows its traceback. (The api-key commands also catch the service's KeyRequestError.)
USER_ERRORS = (DataError, ImageFileError, ModelFolderError)
# stdout's width when it is no terminal (a pipe, a file): as wide as any line or table needs. At
# Rich's default of 80 columns a table is cut to fit, and a confusion matrix's headers read "bl… da…".
PIPED_WIDTH = 100_000

LabelFromName = typer.Option(None, "--label-from-name", help="Regex on file names whose first group is the label, for a flat folder (e.g. '(.+)_\\d+\\.jpg$').")
TextColumn = typer.Option("text", "--text-column", help="CSV/TSV column holding the texts.")
LabelColumn = typer.Option("label", "--label-column", help="CSV/TSV column holding the labels.")
Quiet = typer.Option(False, "--quiet", "-q", help="No progress bars or tables; errors only.")
AsJson = typer.Option(False, "--json", help="Print one JSON document to stdout instead of tables.")
BackboneName = typer.Option(None, "--backbone", help="Use only this backbone. Default: every installed one, compared by cross-validation (efficientnet-lite0 and efficientnet-lite2 for images, all-MiniLM-L6-v2 and all-mpnet-base-v2 for texts); efficientnet-lite0+efficientnet-lite2 puts both side by side, which fine-tuning does not train.")
Threshold = typer.Option(None, "--threshold", help="Answer 'unknown' where the top class's (calibrated) probability is below this, between 0 and 1; `train --target-precision` suggests one.")
UnknownFloor = typer.Option(True, "--unknown/--no-unknown", help="Answer 'unknown' for inputs less familiar (less probable and farther from every class's examples) than almost every known example was on the folds: they look like no class seen in training. --no-unknown turns this floor off (a --threshold still applies).")
ReportFile = typer.Option(None, "--report", help="Also write a self-contained HTML report to this file (its results as JSON beside it).")


# Labels, texts and file names are the user's: each goes through `escape` before Rich prints it, or a
# label such as "[red]" vanished as a style and one such as "a[/]" stopped the command with a traceback.


def _fail(error: Exception) -> None:
    # escaped: a message quotes file names and values, whose brackets are not Rich markup; one line
    # however wide, so that it reads whole in a log
    err.print(f"[bold red]error:[/] {escape(str(error))}", soft_wrap=True)
    raise typer.Exit(code=2)


def _print_version(asked: bool) -> None:
    if asked:
        from importlib.metadata import version

        print(f"smalldata {version('smalldata')}")
        raise typer.Exit()


@app.callback()
def main(
    version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                 help="Print the installed version and exit."),
) -> None:
    """Few-shot image and text classification: train, evaluate, predict, on a CPU and offline."""
    # Decided for each command (the test runner swaps stdout between them): a terminal's width in a
    # terminal, else whole lines and tables, for a file or the next command in a pipe to read.
    out.width = None if out.is_terminal else PIPED_WIDTH


@app.command()
def train(
    data: Optional[Path] = typer.Argument(None, help="A folder of class subfolders of images, or a CSV/TSV of texts (texts: may be left out when --describe gives every class)."),
    out_dir: Path = typer.Option(..., "--out", "-o", help="Model folder to write."),
    backbone: Optional[str] = BackboneName,
    label_from_name: Optional[str] = LabelFromName,
    text_column: str = TextColumn,
    label_column: str = LabelColumn,
    drop_small_classes: bool = typer.Option(False, "--drop-small-classes", help="Leave out classes with fewer than 2 examples instead of stopping."),
    evaluate: bool = typer.Option(True, "--evaluate/--no-evaluate", help="Cross-validate and choose a candidate (needs 2+ examples per class)."),
    curve: bool = typer.Option(True, "--curve/--no-curve", help="Draw the chosen head's learning curve: how much more data would help."),
    report: Optional[Path] = ReportFile,
    seed: int = typer.Option(0, help="Seed for the cross-validation folds."),
    unlabeled: Optional[Path] = typer.Option(None, "--unlabeled", help="Unlabeled examples to learn from too: a folder of images, or a CSV/TSV (text column) or .txt (one a line) of texts."),
    describe: list[str] = typer.Option([], "--describe", help="What a class means, as LABEL=description (texts; repeatable), e.g. \"Sci/Tech=science and technology news\"."),
    describe_file: Optional[Path] = typer.Option(None, "--describe-file", help="A file of LABEL=description lines."),
    describe_names: bool = typer.Option(False, "--describe-names", help="Use the class names themselves as descriptions (for classes --describe leaves out too)."),
    budget: str = typer.Option(DEFAULT_BUDGET, "--budget", help="Time for the whole training, e.g. 90s, 5m, 1h; 0 for the fastest (frozen backbones only). Fine-tuning is tried when its estimated cost fits."),
    finetune: str = typer.Option("auto", "--finetune", help="auto: keep a fine-tune only where cross-validation says it pays; always; never."),
    flip: bool = typer.Option(True, "--flip/--no-flip", help="Mirror training images when fine-tuning (--no-flip where a mirror image changes the label)."),
    tta: bool = typer.Option(False, "--tta", help="Test-time augmentation: a fine-tuned image model averages each prediction with the mirror image's (scored that way in cross-validation too)."),
    target_precision: Optional[float] = typer.Option(None, "--target-precision", help="Also suggest the --threshold at which answers were right this often on the folds (e.g. 0.9), with the share it answered."),
    quiet: bool = Quiet,
    as_json: bool = AsJson,
    ray: Optional[str] = typer.Option(None, "--ray", help="Embed the --unlabeled pool on a Ray cluster, 'auto' (the one started here) or HOST:PORT, into the same cache (needs pip install 'smalldata\\[ray]')."),
) -> None:
    """Read DATA, measure a baseline and heads on a pretrained backbone, keep the best, save it.

    With --unlabeled and --describe, candidates that also learn from unlabeled examples or from what
    the classes mean are judged on the same folds; the output says what each contributed."""
    from smalldata.data import load_dataset
    from smalldata.describe import parse_descriptions
    from smalldata.finetune_choice import FineTuneOptions
    from smalldata.report import training_report, write_report
    from smalldata.train import train as train_model
    from smalldata.unknown import check_threshold
    from smalldata.unlabeled import load_pool
    from smalldata.zero_shot import zero_shot_model

    progress = Progress(enabled=not (quiet or as_json), console=err)
    try:
        parse_budget(budget)  # a mistyped budget, --finetune or --target-precision is said at once, not after reading the data
        fine_tune = FineTuneOptions(finetune, flip=flip, tta=tta)
        check_threshold(target_precision)
        descriptions = parse_descriptions(describe, describe_file) if (describe or describe_file or describe_names) else None
        if data is None:
            if not descriptions:
                raise DataError("give DATA (labeled examples), or describe every class with --describe to train from descriptions alone")
            model = zero_shot_model(descriptions, backbone=backbone)
            model.save(out_dir)
            _print_zero_shot(model, out_dir, as_json, quiet)
            return
        dataset = load_dataset(data, label_from_name=label_from_name, text_column=text_column, label_column=label_column)
        pool = load_pool(unlabeled, dataset, text_column=text_column) if unlabeled is not None else None
        if not (quiet or as_json):
            _print_dataset(dataset)
            if pool is not None:
                out.print(f"{len(pool)} unlabeled {pool.modality}s from {escape(pool.source)} ({len(pool.skipped)} left out: "
                          "unreadable, duplicates, or identical to a labeled example)")
        if ray is not None:  # the pool embedded on the cluster, into the cache where training then finds it
            from smalldata.scale import embed_pool_on_ray

            if pool is None:
                raise DataError("--ray embeds the --unlabeled pool on a Ray cluster: give --unlabeled too")
            embed_pool_on_ray(pool, backbone, ray, progress=progress)
        model = train_model(dataset, backbone=backbone, evaluate=evaluate, drop_small_classes=drop_small_classes,
                            curve=curve, seed=seed, unlabeled=pool, descriptions=descriptions,
                            budget=budget, fine_tune=fine_tune, target_precision=target_precision, progress=progress)
        model.save(out_dir)
        if report is not None:
            write_report(training_report(model, dataset, progress=progress), report)
    except USER_ERRORS as error:
        _fail(error)
    if as_json:
        print(json.dumps({"model": str(out_dir), "chosen": model.head_name, "fine_tuning": model.fine_tuning.to_dict() if model.fine_tuning else None,
                          "cross_validation": model.comparison.to_dict() if model.comparison else None,
                          "learning_curve": model.curve.to_dict() if model.curve else None,
                          "calibration": model.calibration.to_dict() if model.calibration else None,
                          "unknown": model.unknown.to_dict() if model.unknown else None,
                          "data": model.data.to_dict()}))
    elif not quiet:
        if model.comparison:
            _print_comparison(model.comparison)
            _print_contributions(model.comparison)
        if model.curve:
            _print_curve(model.curve)
        if model.fine_tuning:
            out.print(f"fine-tuning: {model.fine_tuning.reason}")
        for trust in (model.calibration, model.unknown):
            if trust:
                out.print(escape(trust.sentence()))
        out.print(f"chose [bold]{model.head_name}[/]; model saved to [bold]{escape(str(out_dir))}[/]")
        if report is not None:
            _print_report_path(report)


@app.command("lr-find")
def lr_find(
    data: Path = typer.Argument(..., help="A folder of class subfolders of images."),
    plot: Optional[Path] = typer.Option(None, "--plot", help="Write the loss against learning rate to this PNG."),
    backbone: str = typer.Option("efficientnet-lite0", help="Image backbone to fine-tune."),
    steps: int = typer.Option(32, "--steps", help="Mini-batches in the range test (rates from 1e-5 to 1e-1)."),
    label_from_name: Optional[str] = LabelFromName,
    as_json: bool = AsJson,
) -> None:
    """Training loss against learning rate after the head-first step, and a suggested rate."""
    from smalldata.data import load_dataset
    from smalldata.finetune import LR_CAP, capped_lr, find_lr

    try:
        dataset = load_dataset(data, label_from_name=label_from_name)
        if dataset.modality != "image":
            raise DataError("lr-find is for image fine-tuning; text fine-tuning uses a fixed rate (2e-5)")
        result = find_lr(dataset, backbone=backbone, steps=steps)
    except USER_ERRORS as error:
        _fail(error)
    if plot is not None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        figure, ax = plt.subplots(figsize=(6, 4))
        result.plot(ax)
        figure.savefig(plot, dpi=100, bbox_inches="tight")
    if as_json:
        print(json.dumps({**asdict(result), "fine_tune_rate": capped_lr(result.suggestion)}))
    else:
        out.print(f"suggested learning rate (head; earlier layers lower): [bold]{result.suggestion:.2e}[/]; "
                  f"fine-tuning uses {capped_lr(result.suggestion):.2e} (at most {LR_CAP:.0e})"
                  + (f"; plot: {escape(str(plot))}" if plot else ""))


@app.command()
def curve(
    data: Path = typer.Argument(..., help="A folder of class subfolders of images, or a CSV/TSV of texts."),
    head: str = typer.Option(DEFAULT_HEAD, help="Which candidate's curve: a name from the `train` table."),
    backbone: Optional[str] = BackboneName,
    label_from_name: Optional[str] = LabelFromName,
    text_column: str = TextColumn,
    label_column: str = LabelColumn,
    seed: int = typer.Option(0, help="Seed for the draws."),
    quiet: bool = Quiet,
    as_json: bool = AsJson,
) -> None:
    """Accuracy at 1, 2, 4, ... examples per class, extrapolated to 2x, 5x and 10x the data."""
    from smalldata.data import load_dataset
    from smalldata.train import curve_of

    progress = Progress(enabled=not (quiet or as_json), console=err)
    try:
        dataset = load_dataset(data, label_from_name=label_from_name, text_column=text_column, label_column=label_column)
        drawn = curve_of(dataset, backbone=backbone, head=head, seed=seed, progress=progress)
    except USER_ERRORS as error:
        _fail(error)
    if as_json:
        print(json.dumps(drawn.to_dict()))
    elif not quiet:
        _print_curve(drawn)


@app.command()
def predict(
    model_dir: Path = typer.Argument(..., help="A model folder written by `smalldata train`."),
    inputs: list[str] = typer.Argument(None, help="Image files or folders (image model), or texts (text model)."),
    file: Optional[Path] = typer.Option(None, "--file", help="Texts to classify: a .txt with one per line, or a CSV/TSV with a text column."),
    text_column: str = TextColumn,
    top: int = typer.Option(3, help="How many classes to show per input, most probable first."),
    threshold: Optional[float] = Threshold,
    unknown: bool = UnknownFloor,
    quiet: bool = Quiet,
    as_json: bool = AsJson,
    out_csv: Optional[Path] = typer.Option(None, "--out", "-o", help="Write a CSV instead (input, label, each class's probability, the familiarity where the model has one, error), streamed in batches: for folders or CSVs of any size. A rerun after an interruption goes on where it stopped."),
    overwrite: bool = typer.Option(False, "--overwrite", help="With --out: start the CSV again instead of resuming it."),
    ray: Optional[str] = typer.Option(None, "--ray", help="With --out: run the batches on a Ray cluster, 'auto' (the one started here) or HOST:PORT (needs pip install 'smalldata\\[ray]')."),
) -> None:
    """Label each input and give its class probabilities."""
    if out_csv is not None:  # a separate path: it streams, where the table and JSON hold every result
        _predict_to_csv(model_dir, [*(inputs or []), *([file] if file else [])], out_csv, text_column=text_column,
                        overwrite=overwrite, ray=ray, quiet=quiet, as_json=as_json, threshold=threshold, unknown=unknown)
        return
    if ray is not None:
        _fail(DataError("--ray runs batch prediction to a CSV: give --out predictions.csv too"))
    from smalldata.model import Model
    from smalldata.unknown import BELOW_THRESHOLD, UNFAMILIAR, answer_records, shown

    try:
        model = Model.load(model_dir)
        cut_off = model.cut_off(threshold, unknown=unknown)
        items = _prediction_inputs(model, inputs or [], file, text_column)
        scored = model.scored(items, progress=Progress(enabled=not (quiet or as_json), console=err))
    except USER_ERRORS as error:
        _fail(error)
    results = [{"input": str(item), **record}
               for item, record in zip(items, answer_records(scored, model.classes, cut_off))]
    if as_json:
        print(json.dumps(results))
        return
    familiar = scored.familiarity is not None
    table = Table("input", "label", *(["familiarity (0-1)"] if familiar else []), f"top {top} classes (probability)")
    for result in results:
        most_probable = list(result["probabilities"].items())[:top]
        label = result["label"] + (f" ({result['unknown_because']})" if result["unknown_because"] else "")
        table.add_row(escape(shorten(result["input"])), escape(label),
                      *([f"{result['familiarity']:.2f}"] if familiar else []),
                      escape(", ".join(f"{k} {v:.2f}" for k, v in most_probable)))
    out.print(table)
    reasons = {result["unknown_because"] for result in results}
    if UNFAMILIAR in reasons:
        out.print(f"unknown: the input looks like none of the classes seen in training (familiarity under "
                  f"{cut_off.familiarity:.2f}: less familiar than almost every training example was to the "
                  "cross-validation folds); --no-unknown turns this floor off")
    if BELOW_THRESHOLD in reasons:
        out.print(f"unknown: no class reached probability {shown(cut_off.probability)}, the --threshold given; the "
                  "input may be of none of these classes (a lower --threshold, or none, answers more)")


def _predict_to_csv(model_dir: Path, sources: list, out_csv: Path, *, text_column: str, overwrite: bool,
                    ray: Optional[str], quiet: bool, as_json: bool, threshold: Optional[float], unknown: bool) -> None:
    from smalldata.batch_predict import predict_to_csv

    if not sources:
        _fail(DataError("give what to classify: a folder of images, image files, or a CSV (of image paths, or texts)"))
    try:
        result = predict_to_csv(model_dir, sources, out_csv, column=text_column, overwrite=overwrite, ray_address=ray,
                                threshold=threshold, unknown=unknown, progress=Progress(enabled=not (quiet or as_json), console=err))
    except USER_ERRORS as error:
        _fail(error)
    if as_json:
        print(json.dumps({"out": str(result.out), "written": result.written, "resumed": result.resumed,
                          "errors": result.errors, "device": result.device}))
    elif not quiet:
        err.print(f"{result.written} predictions written to {escape(str(out_csv))} on {result.device}"
                  + (f", {result.errors} of them unreadable (see the error column)" if result.errors else "")
                  + (f"; {result.resumed} were there already, from an earlier run" if result.resumed else ""))


@app.command()
def evaluate(
    model_dir: Path = typer.Argument(..., help="A model folder written by `smalldata train`."),
    data: Path = typer.Argument(..., help="Labeled test data, in the same layout as for training."),
    label_from_name: Optional[str] = LabelFromName,
    text_column: str = TextColumn,
    label_column: str = LabelColumn,
    json_out: Optional[Path] = typer.Option(None, "--json-out", help="Also write the results as JSON to this file."),
    report: Optional[Path] = ReportFile,
    threshold: Optional[float] = Threshold,
    unknown: bool = UnknownFloor,
    quiet: bool = Quiet,
    as_json: bool = AsJson,
) -> None:
    """Score a model on labeled examples it has not seen: accuracy, per-class precision/recall, confusion;
    and at its cut-off (--threshold, the unknown floor) the share answered and their accuracy."""
    from smalldata.data import load_dataset
    from smalldata.model import Model
    from smalldata.report import test_report, write_report
    from smalldata.unknown import check_threshold

    progress = Progress(enabled=not (quiet or as_json), console=err)
    try:
        check_threshold(threshold)
        model = Model.load(model_dir)
        dataset = load_dataset(data, label_from_name=label_from_name, text_column=text_column, label_column=label_column)
        if report is None:
            result = model.evaluate(dataset, threshold=threshold, unknown=unknown, progress=progress)
        else:
            explained = test_report(model, dataset, threshold=threshold, unknown=unknown, progress=progress)
            write_report(explained, report)
            result = explained.test
    except USER_ERRORS as error:
        _fail(error)
    if json_out is not None:
        json_out.write_text(json.dumps(result.to_dict(), indent=2) + "\n")
    if as_json:
        print(json.dumps(result.to_dict()))
    elif not quiet:
        _print_test_result(result)
        if report is not None:
            _print_report_path(report)


@app.command()
def export(
    model_dir: Path = typer.Argument(..., help="A model folder written by `smalldata train`."),
    format_: str = typer.Option("onnx", "--format", help="The file format: onnx (backbone, head and calibration as one graph)."),
    out_path: Path = typer.Option(..., "--out", "-o", help="The file to write, e.g. model.onnx (a text model's tokenizer JSON goes beside it)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace --out (and the tokenizer beside it) if it exists."),
    quiet: bool = Quiet,
) -> None:
    """Write the model as one file that runs without smalldata: preprocessed inputs in, class probabilities out."""
    from smalldata.export import FORMATS, export_onnx
    from smalldata.model import Model

    if format_ not in FORMATS:
        _fail(DataError(f"--format {format_!r} is not one smalldata writes: choose one of {', '.join(FORMATS)}"))
    try:
        with Progress(enabled=not quiet, console=err).spinner(f"exporting {model_dir} to {format_.upper()}"):
            written = export_onnx(Model.load(model_dir), out_path, overwrite=overwrite)
    except USER_ERRORS as error:
        _fail(error)
    if quiet:
        return
    out.print(f"wrote {escape(str(written.path))} ({written.size_bytes / 2**20:.1f} MiB): outputs 'probabilities', "
              "one column per label (the labels are in its metadata)")
    for name, what in written.inputs.items():
        out.print(f"  input {escape(name)}: {escape(what)}")
    for tokenizer in written.tokenizers:
        out.print(f"  tokenizer: {escape(str(tokenizer))}")


@app.command()
def suggest(
    model_dir: Path = typer.Argument(..., help="A model folder written by `smalldata train`."),
    unlabeled: Path = typer.Argument(..., help="Unlabeled images (a folder, searched recursively) or texts (CSV/TSV with a text column, or .txt, one per line)."),
    n: int = typer.Option(50, "--n", min=1, help="How many examples to suggest."),
    out_path: Optional[Path] = typer.Option(None, "--out", "-o", help="Where to write them: a new folder (images) or CSV (texts). Default: to-label/ or to-label.csv."),
    labeled: Optional[Path] = typer.Option(None, "--labeled", help="The training data: suggestions near what is already labeled count for less."),
    text_column: str = TextColumn,
    seed: int = typer.Option(0, help="Seed for the clustering."),
    quiet: bool = Quiet,
    as_json: bool = AsJson,
) -> None:
    """Rank unlabeled examples by how much labeling them would help (uncertainty and diversity) and write them out to label."""
    from smalldata.data import load_dataset
    from smalldata.model import Model
    from smalldata.suggest import load_unlabeled, write_suggestions
    from smalldata.suggest import suggest as rank_unlabeled

    progress = Progress(enabled=not (quiet or as_json), console=err)
    try:
        model = Model.load(model_dir)
        pool = load_unlabeled(unlabeled, text_column=text_column)
        if pool.modality != model.modality:
            raise DataError(f"this model classifies {model.modality}s, but {unlabeled} holds {pool.modality}s")
        known = load_dataset(labeled, text_column=text_column).inputs if labeled is not None else None
        picks = rank_unlabeled(model, pool.inputs, n=n, labeled=known, seed=seed, progress=progress)
        target = out_path or Path("to-label" if model.modality == "image" else "to-label.csv")
        written = write_suggestions(picks, target, model.modality)
    except USER_ERRORS as error:  # an --out that exists too (OutputExistsError)
        _fail(error)
    if as_json:
        print(json.dumps({"written": str(written), "skipped": [asdict(s) for s in pool.skipped],
                          "suggestions": [s.to_dict() for s in picks]}))
        return
    if quiet:
        return
    for entry in pool.skipped[:SKIPPED_SHOWN]:
        out.print(f"[yellow]skipped[/] {escape(entry.what)}: {escape(entry.reason)}")
    table = Table("rank", "example", "predicted now", "probability", "uncertainty (1 - margin)",
                  title=f"the {len(picks)} of {len(pool.inputs)} unlabeled examples to label first")
    for pick in picks[:20]:
        table.add_row(str(pick.rank), escape(shorten(str(pick.item))), escape(pick.predicted), f"{pick.probability:.2f}",
                      f"{pick.uncertainty:.2f}")
    out.print(table)
    out.print(f"written to [bold]{escape(str(written))}[/]: label them, add them to the training data, train again")


DataDir = typer.Option(Path("smalldata-data"), "--data", help="The service's data folder: database (SQLite), uploads, model versions.")
DbUrl = typer.Option(None, "--db", help="A database URL instead of SQLite in --data, e.g. postgresql+psycopg://user@host/db.")


@app.command()
def serve(
    data_dir: Path = DataDir,
    db: Optional[str] = DbUrl,
    model_dir: Optional[Path] = typer.Option(None, "--model", help="Serve only this model folder, read-only: predictions, no projects."),
    host: str = typer.Option("127.0.0.1", help="Address to listen on (the default answers this machine only, and "
                             "needs no API key until one is made; any other address always needs keys)."),
    port: int = typer.Option(8000, help="Port to listen on."),
    threads: int = typer.Option(32, help="Requests handled at once (a thread each)."),
    public_read: bool = typer.Option(False, "--public-read", help="Let anyone read every project, its examples and "
                                     "models without a key (writes and predictions still need one)."),
) -> None:
    """Start the web page and the REST API (OpenAPI at /docs): upload examples, train, predict."""
    import uvicorn

    from smalldata.service import create_app
    from smalldata.service.auth import is_loopback

    loopback = is_loopback(host)
    try:  # the model folder is loaded and checked here, before anything listens
        application = create_app(data_dir, db_url=db, model_dir=model_dir, threads=threads, public_read=public_read,
                                 loopback_only=loopback)
    except USER_ERRORS as error:
        _fail(error)
    needs = ("anyone may read (--public-read); writes and predictions need" if public_read else "every request needs")
    local = ("; until the first is made, requests from this machine need none" if loopback else "")
    err.print(f"smalldata serving on http://{host}:{port}/ (API description: http://{host}:{port}/docs); "
              f"{needs} a key from `smalldata api-key create`{local}")
    uvicorn.run(application, host=host, port=port, log_level="warning")


api_key_app = typer.Typer(no_args_is_help=True, help="API keys for the service: make, list and revoke them.")
app.add_typer(api_key_app, name="api-key")


@contextmanager
def _key_store(data_dir: Path, db: Optional[str], *, create: bool = False):
    """The service's database, for the key commands (brought up to date if need be). Only `create`
    makes one: listing or revoking in a mistyped --data folder says so instead of making it."""
    from smalldata.service.storage import database_url, make_engine, session_factory

    if not create and db is None and not (data_dir / "smalldata.db").exists():
        raise DataError(f"{data_dir} holds no service database (smalldata.db): give the --data folder "
                        "`smalldata serve` uses (or its --db)")
    data_dir.mkdir(parents=True, exist_ok=True)
    engine = make_engine(database_url(data_dir, db))
    try:
        yield session_factory(engine)
    finally:
        engine.dispose()


@api_key_app.command("create")
def api_key_create(
    data_dir: Path = DataDir,
    db: Optional[str] = DbUrl,
    name: str = typer.Option("", help="A note on who or what the key is for."),
    owner: str = typer.Option("default", help="The user or team the key acts for: keys of one owner share its "
                              "projects and see no other's."),
) -> None:
    """Make a new API key and print it once (only its hash is stored)."""
    from smalldata.service import auth

    with _key_store(data_dir, db, create=True) as sessions:
        try:
            key = auth.create_key(sessions, name, owner)
        except auth.KeyRequestError as error:
            _fail(error)
    print(key)
    err.print(f"this key is shown once: keep it; send it as the X-API-Key header (owner: {owner})")


@api_key_app.command("list")
def api_key_list(data_dir: Path = DataDir, db: Optional[str] = DbUrl) -> None:
    """The keys (never the keys themselves): id, owner, note, when made and when revoked."""
    from smalldata.service import auth

    try:
        with _key_store(data_dir, db) as sessions:
            keys = auth.list_keys(sessions)
    except DataError as error:
        _fail(error)
    table = Table("id", "owner", "note", "created (UTC)", "revoked (UTC)", title=f"{len(keys)} API keys")
    for key in keys:
        table.add_row(str(key.id), escape(key.owner), escape(key.name), f"{key.created:%Y-%m-%d %H:%M}",
                      f"{key.revoked:%Y-%m-%d %H:%M}" if key.revoked else "")
    out.print(table)


@api_key_app.command("revoke")
def api_key_revoke(key_id: int = typer.Argument(..., help="The key's id, from `smalldata api-key list`."),
                   data_dir: Path = DataDir, db: Optional[str] = DbUrl) -> None:
    """Revoke a key: running services refuse it within a few seconds. Its owner's projects stay."""
    from smalldata.service import auth

    try:
        with _key_store(data_dir, db) as sessions:
            key = auth.revoke(sessions, key_id)
    except (DataError, auth.KeyRequestError) as error:
        _fail(error)
    err.print(f"key {key.id} (owner {key.owner}) is revoked; services refuse it within "
              f"{auth.KEY_RECHECK_S:.0f} s")


def _prediction_inputs(model: Model, inputs: list[str], file: Optional[Path], text_column: str) -> list:
    if model.modality == "text":
        texts = list(inputs)
        for text in texts:
            if _is_image_file(text):
                raise DataError(f"{text} is an image file; this model classifies texts: give texts, "
                                "or --file a CSV/TXT of texts")
            if os.path.isfile(text):  # classified as the words of its name, it would get a plausible label
                raise DataError(f"{text} is a file: give it with --file {text} to classify the texts in it "
                                "(or --out predictions.csv to write them to a CSV)")
            if not text.strip():
                raise DataError("an input text is empty: give the text to classify (empty lines of a --file "
                                "are skipped)")
        if file is not None:
            texts += _texts_from_file(file, text_column)
        if not texts:
            raise DataError("give texts to classify as arguments, or a file of them with --file")
        return texts
    paths: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            paths += sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        elif path.is_file():
            paths.append(path)
        else:
            raise DataError(f"{str(item)!r} is not a file or folder: give image files or folders of images")
    if not paths:
        raise DataError("no images to classify: give image files or folders of images")
    _refuse_non_images(paths)
    return paths


def _is_image_file(item: str) -> bool:
    """Whether `item`, given to a text model, names an existing image file: by its extension, or
    because Pillow opens it (which reads its header only)."""
    if not os.path.isfile(item):  # False, not an error, for a text too long or odd to be a path
        return False
    if Path(item).suffix.lower() in IMAGE_SUFFIXES:
        return True
    from PIL import Image

    try:
        with Image.open(item):
            return True
    except Image.DecompressionBombError:  # an image, and a huge one
        return True
    except Exception:  # Pillow raises many types for a file that is no image; all mean "not one"
        return False


def _refuse_non_images(paths: list[Path]) -> None:
    """Check every input from its size and header before any is read whole (hashed, decoded): a
    large file that is no image is refused at the cost of a few bytes read."""
    from smalldata.data import image_problems

    problems = [(path, problem) for path, problem in zip(paths, image_problems(paths)) if problem]
    if problems:
        path, problem = problems[0]
        more = f" (and {len(problems) - 1} more files like it)" if len(problems) > 1 else ""
        raise DataError(f"cannot classify {path}: {problem}{more}; give image files only")


def _texts_from_file(file: Path, text_column: str) -> list[str]:
    from smalldata.data import read_texts

    if not file.exists():
        raise DataError(f"{file} does not exist")
    return [text.strip() for _, text in read_texts(file, text_column=text_column) if text.strip()]


def _print_report_path(report: Path) -> None:
    out.print(f"report: [bold]{escape(str(report))}[/] (and its results as JSON: {escape(str(report.with_suffix('.json')))})")


def _print_dataset(dataset: Dataset) -> None:
    counts = dataset.counts()
    table = Table("class", "examples", title=f"{len(dataset)} {dataset.modality}s in {len(counts)} classes from {escape(dataset.source)}")
    for label, n in counts.items():
        table.add_row(escape(label), str(n) + ("  [red](too few to cross-validate)[/]" if n < 2 else ""))
    out.print(table)
    for title, entries in (("skipped", dataset.skipped), ("left out as exact duplicates", dataset.dropped_duplicates)):
        if entries:
            out.print(f"[yellow]{len(entries)} {title}:[/]")
            for entry in entries[:SKIPPED_SHOWN]:
                out.print(f"  {escape(entry.what)}: {escape(entry.reason)}")
            if len(entries) > SKIPPED_SHOWN:
                out.print(f"  ... and {len(entries) - SKIPPED_SHOWN} more (all are listed in model.json)")
    for group in dataset.conflicting_duplicates:
        out.print(f"[yellow]identical content with different labels (kept; fix the labels):[/] {escape('; '.join(group))}")


def _print_comparison(comparison: Comparison) -> None:
    from smalldata.evaluate import INFORMED_RULE

    baseline = comparison.baseline
    table = Table("candidate", "mean accuracy", "spread (std)", "standard error", "vs baseline", "balanced accuracy",
                  "lowest class recall", "calibration error",
                  title=f"cross-validated accuracy ({comparison.n_repeats}x repeated stratified "
                        f"{comparison.n_splits}-fold, {comparison.n_examples} examples)")
    for score in comparison.scores:
        delta = "" if baseline is None or score is baseline else f"{100 * (score.mean - baseline.mean):+z.1f} points"
        name = f"[bold]{score.name}[/] (chosen)" if score is comparison.chosen else score.name
        table.add_row(name, f"{100 * score.mean:.1f}%", f"±{100 * score.std:.1f}",
                      f"±{100 * score.standard_error:.1f}", delta, f"{100 * score.balanced_mean:.1f}%",
                      "" if score.lowest_recall is None else f"{score.lowest_recall:.2f}",
                      "" if score.calibration_error is None else f"{score.calibration_error:.3f}")
    out.print(table)
    out.print("balanced accuracy: the mean of the classes' recalls; calibration error (ECE): the mean gap between "
              "confidence and the share right, before calibration")
    rule = (f"chosen: the first head in the table (the most preferred) whose mean {comparison.metric} is within one "
            "standard error of the best mean")
    if comparison.balanced:
        rule += " (the classes are uneven, so balanced accuracy decides)"
    out.print(rule + (f"; then {INFORMED_RULE}" if comparison.informed else ""))


def _print_contributions(comparison: Comparison) -> None:
    """What the unlabeled pool, the descriptions or the class names added: paired per-fold differences, in points."""
    if not comparison.informed:
        return
    contributions = comparison.to_dict()["contributions"]
    table = Table("candidate", "gain over labeled-only choice", "spread (std over folds)", "kept?",
                  title="what the extra knowledge contributed (accuracy points, paired on the same folds)")
    for name, found in contributions.items():
        table.add_row(name, f"{found['mean_points']:+z.1f} points over {found['over']}", f"±{found['std_points']:.1f}",
                      "yes" if comparison.chosen.name == name else "no")
    out.print(table)


def _print_zero_shot(model: Model, out_dir: Path, as_json: bool, quiet: bool) -> None:
    if as_json:
        print(json.dumps({"model": str(out_dir), "chosen": model.head_name, "cross_validation": None,
                          "learning_curve": None, "data": model.data.to_dict()}))
    elif not quiet:
        out.print(f"no examples: a text is given the class whose description it is nearest to "
                  f"({len(model.classes)} classes); model saved to [bold]{escape(str(out_dir))}[/]")


def _print_curve(curve: LearningCurve) -> None:
    table = Table("examples per class", "mean accuracy", "spread (std)", "draws",
                  title="learning curve (each draw scored on the examples it left out)")
    for point in curve.points:
        table.add_row(str(point.per_class), f"{100 * point.mean:.1f}%", f"±{100 * point.std:.1f}", str(len(point.accuracies)))
    for projection in curve.projections:
        table.add_row(f"{projection.per_class:.0f} ({projection.factor:g}x, extrapolated)",
                      f"{100 * projection.accuracy:.1f}%",
                      f"80% band {100 * projection.low:.1f}-{100 * projection.high:.1f}%", "")
    out.print(table)
    out.print(f"more data: {curve.summary}")


def _print_test_result(result: TestResult) -> None:
    from smalldata.unknown import CutOff

    out.print(f"accuracy on {result.n_examples} test examples, every input given its most probable class: "
              f"[bold]{100 * result.accuracy:.1f}%[/]")
    if result.unknown_labels:
        out.print(f"[yellow]test labels the model never saw (always counted wrong):[/] {escape(', '.join(result.unknown_labels))}")
    if result.cut_off > 0 or result.familiarity_floor is not None:
        answered = ("no known input answered" if result.answered_accuracy is None
                    else f"{100 * result.answered_accuracy:.1f}% of those answers right")
        needed = CutOff(result.cut_off, result.familiarity_floor).said()
        out.print(f"answered at {needed} or more: {100 * result.coverage:.1f}% of the known "
                  f"classes' inputs, {answered}; the rest answered 'unknown'")
        if result.unknown_answered is not None:
            out.print(f"inputs of classes the model never saw: {100 * (1 - result.unknown_answered):.1f}% answered 'unknown'")
    table = Table("class", "precision", "recall", "F1", "test examples", title="per class")
    for label, row in result.per_class.items():
        table.add_row(escape(label), f"{row['precision']:.2f}", f"{row['recall']:.2f}", f"{row['f1']:.2f}", str(row["support"]))
    out.print(table)
    confusion = Table("true \\ predicted", *map(escape, result.labels), title="confusion matrix (rows: true class, columns: predicted)")
    for label, row in zip(result.labels, result.confusion):
        confusion.add_row(escape(label), *[str(v) for v in row])
    out.print(confusion)

