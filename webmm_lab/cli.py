"""The `webmm-lab` command: run notebooks headless, print claims, build the student labs.

    webmm-lab run 00 --profile cpu        # execute notebook 00 in a fresh kernel
    webmm-lab run all --profile smoke
    webmm-lab run 07 --profile gpu --dry-run   # every cell at gpu sizes, 2 training steps a call
    webmm-lab run 01 --profile cpu --seeds 0-4 # once per seed and once on one thread: the spread
    webmm-lab results                     # every recorded claim, as a table
    webmm-lab results --stale             # notebooks whose stored outputs predate package changes
    webmm-lab labs build [--check]        # regenerate labs/labNN_*.ipynb from labs/solutions/
    webmm-lab grade SUBMISSIONS [--lab 03] [--out grades.csv]   # run and grade students' labs
    webmm-lab grade SUBMISSIONS --isolate container       # each in a container, without network
    webmm-lab book [--out DIR]            # the course as a static website (stored outputs)
    webmm-lab colab --repo OWNER/NAME [--ref TAG]   # point every Colab badge and install cell at a fork
    webmm-lab times [--smoke]             # each notebook's measured time, as a Markdown table
    webmm-lab music build                 # re-parse music21's corpus into the shipped note file
    webmm-lab train gpt|clip [--steps N ...]  # train notebook 02's GPT or 07's CLIP; under torchrun:
    torchrun --standalone --nproc_per_node=2 --no-python webmm-lab train clip
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Callable

from .claims import format_table, load_code, load_results
from .paths import course_root, results_dir
from .settings import PROFILES, settings
from .spread import format_spread, load_spread, spread, spread_path, spread_problems
from .tools.grading import need_jupyter

TRAINERS = {"gpt": "webmm_lab.experiments.gpt", "clip": "webmm_lab.experiments.clip"}  # their main()


def _root() -> Path:
    root = course_root()
    if root is None:
        sys.exit("webmm-lab: run this inside the course checkout (the folder with notebooks/ "
                 "and pyproject.toml)")
    return root


def resolve_notebooks(names: list[str], folder: Path) -> list[Path]:
    """Notebook paths for names such as '00', '2', '00_setup_and_tour', 'gpt', or 'all'."""
    books = sorted(folder.glob("[0-9][0-9]_*.ipynb"))
    if not books:
        raise SystemExit(f"webmm-lab: no notebooks in {folder}")
    if names == ["all"]:
        return books
    chosen = []
    for name in names:
        key = name.removesuffix(".ipynb")
        if key.isdigit():
            key = f"{int(key):02d}"
        hits = [b for b in books if b.stem == key or b.stem.startswith(key + "_")] or \
               [b for b in books if key.lower() in b.stem.lower()]
        if len(hits) != 1:
            known = ", ".join(b.stem for b in books)
            raise SystemExit(f"webmm-lab: {name!r} matches {len(hits)} notebooks; known: {known}")
        chosen += hits
    return chosen


def run_notebook(path: Path, profile: str, out_dir: Path, cell_timeout: int = 1200,
                 store: bool = False, env: dict[str, str] | None = None,
                 transform: Callable | None = None) -> tuple[bool, float, str]:
    """Execute `path` top to bottom in a fresh kernel; write the executed copy to `out_dir`.

    Returns (ok, seconds, error summary); any failure (a cell's error, a cell past its time
    limit, a kernel that dies) is reported, never raised, and the executed copy is written
    anyway. With `store`, a clean run's outputs are written back to `path`, with the package
    modules it ran and where (notebook metadata "webmm_lab"; see `webmm-lab results --stale`).
    `env` adds environment variables for the kernel; `transform(nb)` gives the notebook to run
    instead (the report's cells; never stored).
    """
    need_jupyter()
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    nb = nbformat.read(path, as_version=4)
    if transform is not None:
        if store:
            raise ValueError("a transformed notebook is never stored")
        nb = transform(nb)
    env = {**os.environ, **(env or {}), "WEBMM_PROFILE": profile, "WEBMM_RESULTS": str(out_dir.resolve())}
    client = NotebookClient(nb, timeout=cell_timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}})
    t0 = time.perf_counter()
    error = ""
    try:
        client.execute(env=env)
    except CellExecutionError as e:
        error = str(e).strip().splitlines()[-1] if str(e).strip() else repr(e)
    except Exception as e:       # a cell past its timeout, a dead kernel, a kernel that never started
        error = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"
    seconds = time.perf_counter() - t0
    out_dir.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, out_dir / path.name)
    if store and not error:
        from .provenance import machine
        nb.metadata["webmm_lab"] = {"profile": profile, "seconds": round(seconds, 1),
                                    "stored": time.strftime("%Y-%m-%d"), "machine": machine(),
                                    "threads": env.get("OMP_NUM_THREADS", "all"),
                                    "code": load_code(out_dir, path.stem)}
        nbformat.write(nb, path)
    return not error, seconds, error


def stale_notebooks(folder: Path) -> list[tuple[str, str, list[str]]]:
    """Notebooks in `folder` whose stored outputs or stored spread predate a change to the
    package code they ran: (notebook, 'outputs' | 'spread' | 'gpu spread' | 'gpu estimate',
    reasons). A notebook stored without that record counts as stale, with 'no record' as its
    reason; so does a spread whose claims name no baseline ('no baselines'), and a gpu estimate
    made from other code cells than the notebook's today ('notebook changed')."""
    import nbformat

    from .provenance import stale_modules
    from .tools.report import code_digest, load_estimate
    out = []
    for book in sorted(folder.glob("[0-9][0-9]_*.ipynb")):
        nb = nbformat.read(book, as_version=4)
        meta = nb.metadata.get("webmm_lab", {})
        cpu, gpu, est = load_spread(book.stem) or {}, load_spread(book.stem, "gpu"), load_estimate(book.stem)
        stored = [("outputs", meta.get("code"), None), ("spread", cpu.get("code"), cpu)]
        stored += [("gpu spread", gpu.get("code"), gpu)] if gpu else []
        stored += [("gpu estimate", est.get("code"), None)] if est else []
        for what, code, data in stored:
            reasons = ["no record"] if not code else stale_modules(code)
            if data and any(c["kind"] == "claim" and not c.get("baseline") for c in data["claims"]):
                reasons.append("no baselines")
            if what == "gpu estimate" and est["notebook_code"] != code_digest(nb):
                reasons.append("notebook changed")
            if reasons:
                out.append((book.stem, what, reasons))
    return out


def parse_seeds(text: str) -> list[int]:
    """'0-4' -> [0, 1, 2, 3, 4]; '0,3,7' -> [0, 3, 7]; '2' -> [2]."""
    seeds = []
    try:
        for part in text.split(","):
            lo, _, hi = part.strip().partition("-")
            seeds += list(range(int(lo), int(hi) + 1)) if hi else [int(lo)]
    except ValueError:
        raise SystemExit(f"webmm-lab: --seeds takes a range or list such as 0-4 or 0,3,7, got {text!r}") from None
    if not seeds:
        raise SystemExit(f"webmm-lab: --seeds {text!r} names no seed")
    return seeds


def run_seeds(book: Path, profile: str, out: Path, seeds: list[int], one_thread: bool,
              cell_timeout: int, env: dict[str, str], store: bool) -> dict:
    """Run `book` once per seed (and once more on one thread, the first seed), every claim
    recorded and none enforced; print and return the spread of its claims."""
    runs = {f"seed {s}": {"WEBMM_SEED": str(s)} for s in seeds}
    if one_thread:
        runs[f"seed {seeds[0]}, 1 thread"] = {"WEBMM_SEED": str(seeds[0]), "OMP_NUM_THREADS": "1",
                                               "MKL_NUM_THREADS": "1"}
    from .provenance import machine
    claims, seconds, threads, code = {}, {}, {}, {}
    for label, extra in runs.items():
        folder = out / "seeds" / book.stem / label.replace(", ", "-").replace(" ", "-")
        shutil.rmtree(folder, ignore_errors=True)    # measure afresh: no old claims, no checkpoints
        print(f"running {book.name} (profile {profile}, {label}) ...", flush=True)
        ok, secs, error = run_notebook(book, profile, folder, cell_timeout, False,
                                       {**env, **extra, "WEBMM_CLAIMS": "record"})
        print(f"  {'ok' if ok else 'FAILED'} in {secs:.1f} s" + (f"\n  {error}" if error else ""), flush=True)
        claims[label], seconds[label] = load_results(folder, [book.stem]), round(secs, 1)
        threads[label] = extra.get("OMP_NUM_THREADS", env.get("OMP_NUM_THREADS", "all"))
        code.update(load_code(folder, book.stem))
    data = spread(book.stem, profile, claims, seconds, code=code, machine=machine(), threads=threads)
    text = json.dumps(data, indent=1)
    (out / f"{book.stem}.spread.json").write_text(text)
    if store:
        path = spread_path(book.stem, profile)
        path.parent.mkdir(exist_ok=True)
        path.write_text(text + "\n")
        print(f"stored {path}")
    print(format_spread(data) + "\n")
    return data


def build_parser() -> argparse.ArgumentParser:
    """The command line: one subcommand per task (`webmm-lab --help`)."""
    parser = argparse.ArgumentParser(prog="webmm-lab", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    p_run = sub.add_parser("run", help="execute notebooks in a fresh kernel and print their claims")
    p_run.add_argument("notebooks", nargs="+", help="numbers or names (00, 2, gpt) or 'all'")
    p_run.add_argument("--profile", choices=PROFILES, default=None,
                       help="smoke | cpu | gpu (default: $WEBMM_PROFILE, else gpu with CUDA, else cpu)")
    p_run.add_argument("--store", action="store_true",
                       help="also write the executed outputs back into notebooks/ (maintainers)")
    p_run.add_argument("--cell-timeout", type=int, default=1200, help="seconds per cell")
    p_run.add_argument("--dry-run", type=int, nargs="?", const=2, default=None, metavar="STEPS",
                       help="every cell at the profile's sizes, but only STEPS (default 2) training "
                       "steps per call, claims not enforced; results go to results/dry-run/")
    p_run.add_argument("--amp", choices=["auto", "bf16", "fp16", "off"], default=None,
                       help="mixed precision in the kernel (WEBMM_AMP): bf16 runs a GPU's precision "
                       "on the CPU to find dtype mismatches (slow on CPUs without bf16 units: pair "
                       "it with --profile smoke)")
    p_run.add_argument("--seeds", default=None, metavar="LIST",
                       help="run each notebook once per seed (WEBMM_SEED), e.g. 0-4 or 0,3,7, and once "
                       "more on one thread; claims recorded, not enforced; print each claim's min / "
                       "median / max and how many runs passed. With --store, keep that spread in "
                       "the package (webmm_lab/spreads/): the notebook shows it under its claims")
    p_run.add_argument("--no-one-thread", action="store_true",
                       help="with --seeds: skip the extra run with OMP_NUM_THREADS=1")
    p_run.add_argument("--report", action="store_true",
                       help="also measure what the run costs: seconds per section, each training loop's "
                       "steps, samples per second and FLOPs, the precision, peak GPU memory, a T4 "
                       "estimate; written to results/report/ (see webmm_lab/tools/report.py). With "
                       "--profile gpu --dry-run --store, keep that estimate in the package "
                       "(webmm_lab/spreads/<notebook>.gpu-estimate.json) for the README's gpu column")
    p_res = sub.add_parser("results", help="print every recorded claim as a table")
    p_res.add_argument("--stale", action="store_true",
                       help="list the notebooks whose stored outputs or spread predate a change to "
                       "the package code they ran")
    p_labs = sub.add_parser("labs", help="lab notebooks")
    p_labs.add_argument("action", choices=["build"])
    p_labs.add_argument("--check", action="store_true", help="only report out-of-date labs")
    p_grade = sub.add_parser("grade", help="run students' lab notebooks headless, each in a box of its "
                             "own, and collect every sealed check's PASS or FAIL")
    p_grade.add_argument("submissions", help="a folder of notebooks (one per student, or one folder "
                         "per student) or one notebook")
    p_grade.add_argument("--lab", default=None, help="the lab number, e.g. 03 (default: from each "
                         "notebook's metadata or name)")
    p_grade.add_argument("--out", default="grades.csv", help="the CSV file, one row per student and check")
    p_grade.add_argument("--time-limit", type=float, default=300, help="seconds per notebook (default 300)")
    p_grade.add_argument("--cell-limit", type=float, default=None, help="seconds per cell (default: "
                         "the notebook's time limit)")
    p_grade.add_argument("--isolate", choices=["process", "container"], default="process",
                         help="process: a temporary copy, confined with Landlock where Linux has it "
                         "(default); container: a Docker or Podman container without network")
    p_grade.add_argument("--image", default=None, help="the container image for --isolate container "
                         "(default: webmm-lab-grade; the README says how to build it)")
    p_book = sub.add_parser("book", help="build the course's static website from the README, the "
                            "notebooks' stored outputs and the student labs")
    p_book.add_argument("--out", default=None, help="the site's folder (default: results/book)")
    p_colab = sub.add_parser("colab", help="point every Colab badge and install cell at another "
                             "repository (an instructor's fork), a tag or a commit; rewrite the install "
                             "cells and Colab's GPU runtime in every notebook")
    p_colab.add_argument("--repo", default=None, metavar="OWNER/NAME", help="the GitHub repository: "
                         "OWNER/NAME or its https://github.com/ URL (default: the current one)")
    p_colab.add_argument("--ref", default=None, metavar="TAG_OR_COMMIT", help="pin install cells and "
                         "badges to this tag or commit (default: the default branch, badges at main)")
    p_times = sub.add_parser("times", help="each notebook's time in the cpu profile (2 threads, 1 thread) "
                             "from the stored spreads, as a Markdown table")
    p_times.add_argument("--smoke", action="store_true", help="also run each notebook in the smoke "
                         "profile now and add its time")
    p_music = sub.add_parser("music", help="the shipped music file (maintainers)")
    p_music.add_argument("action", choices=["build"])
    p_music.add_argument("--per-style", type=int, default=None, help="pieces per style")
    p_train = sub.add_parser("train", help="train a course model from the command line "
                             "(also under torchrun); `webmm-lab train clip --help` for options")
    p_train.add_argument("model", choices=sorted(TRAINERS))
    p_train.add_argument("options", nargs=argparse.REMAINDER)
    return parser


def _run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Execute notebooks in a fresh kernel (or once per seed) and print their claims."""
    from .profiles import active_profile
    profile = args.profile or active_profile()
    root = _root()
    out = results_dir()
    env = {}
    if args.store and profile == "smoke":
        parser.error("--store keeps the cpu profile's outputs (or gpu's); smoke's tiny sizes "
                     "are for tests: use --profile cpu")
    if args.store and settings().claims == "record":
        parser.error("--store keeps enforced runs only: unset WEBMM_CLAIMS=record")
    if args.report and args.seeds is not None:
        parser.error("--report measures one run: drop --seeds")
    estimate = args.report and args.store
    if estimate and (args.dry_run is None or profile != "gpu"):
        parser.error("--report --store keeps the T4 estimate of a gpu dry run: add --profile gpu "
                     "--dry-run (to keep a real run's outputs, drop --report)")
    if args.dry_run is not None:
        if args.store and not estimate:
            parser.error("--store keeps real runs only; drop --dry-run or --store (with --report and "
                         "--profile gpu it keeps the T4 estimate)")
        out = out / "dry-run"
        shutil.rmtree(out / "checkpoints", ignore_errors=True)     # every dry run starts afresh
        env["WEBMM_DRY_RUN"] = str(args.dry_run)
    if args.amp:
        env["WEBMM_AMP"] = args.amp
    books = resolve_notebooks(args.notebooks, root / "notebooks")
    if args.seeds is not None:
        if args.dry_run is not None:
            parser.error("--seeds measures real runs; drop --dry-run")
        seeds = parse_seeds(args.seeds)
        failing = []
        for book in books:
            data = run_seeds(book, profile, out, seeds, not args.no_one_thread, args.cell_timeout,
                             env, args.store)
            failing += [f"{book.stem}: {problem}" for problem in spread_problems(data)]
        if failing:
            print("claims that are not claims on every run (failed, refused, or with no "
                  "baseline):\n  " + "\n  ".join(failing))
            return 1
        return 0
    if args.report:
        from .tools.report import report_notebooks
        return report_notebooks(books, profile, out, args.cell_timeout, env, run_notebook,
                                store=args.dry_run if estimate else None)
    failed = []
    for book in books:
        extra = "".join(f", {k}={v}" for k, v in env.items())
        print(f"running {book.name} (profile {profile}{extra}) ...", flush=True)
        ok, seconds, error = run_notebook(book, profile, out, args.cell_timeout, args.store, env)
        print(f"  {'ok' if ok else 'FAILED'} in {seconds:.1f} s -> {out / book.name}"
              + (f"\n  {error}" if error else ""), flush=True)
        if not ok:
            failed.append(book.stem)
    print()
    print(format_table(load_results(out, [b.stem for b in books])))
    if failed:
        print(f"\nfailed: {', '.join(failed)}")
        return 1
    return 0


def _train(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Train a course model from the command line."""
    import importlib
    return importlib.import_module(TRAINERS[args.model]).main(args.options)


def _colab(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Point every Colab badge and install cell at another repository (and ref)."""
    from .tools.colab import parse_repo, repository, set_repository
    old = repository(_root())
    try:
        new = parse_repo(args.repo) if args.repo else old
        changed = set_repository(_root(), new, args.ref)
    except ValueError as e:
        raise SystemExit(f"webmm-lab colab: {e}") from None
    at = f" at {args.ref}" if args.ref else ""
    print(f"{old} -> {new}{at}: {len(changed)} files rewritten" + "".join(f"\n  {p}" for p in changed))
    return 0


def _times(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Print each notebook's cpu time from the stored spreads (and a smoke run now)."""
    books = resolve_notebooks(["all"], _root() / "notebooks")
    smoke = {}
    if args.smoke:
        for book in books:
            ok, secs, _ = run_notebook(book, "smoke", results_dir() / "times")
            smoke[book.stem] = f"{secs:.0f} s" if ok else "failed"
    from .tools.report import times_table
    print(times_table(books, smoke))
    return 0


def _book(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Build the course's static website."""
    from .tools.book import build_book
    t0 = time.perf_counter()
    index = build_book(_root(), Path(args.out) if args.out else results_dir() / "book")
    print(f"built {index} in {time.perf_counter() - t0:.0f} s; open it in a browser, or serve "
          f"the folder: python -m http.server -d {index.parent}")
    return 0


def _grade(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Grade students' lab notebooks into a CSV file."""
    from .tools.grading import IMAGE, grade, summary, write_csv
    lab = f"{int(args.lab):02d}" if args.lab is not None and args.lab.isdigit() else args.lab
    graded = grade(Path(args.submissions), _root() / "labs" / "solutions", lab, args.time_limit,
                   cell_limit=args.cell_limit, isolate=args.isolate, image=args.image or IMAGE)
    write_csv(graded, Path(args.out))
    print(summary(graded))
    print(f"\nwrote {args.out}: one row per student and check")
    return 0


def _music(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Rebuild the shipped music file."""
    from .data import music
    pieces = music.build_corpus(args.per_style or music.PER_STYLE)
    digest = music.save_pieces(pieces, music.SHIPPED)
    print(f"wrote {len(pieces)} pieces to {music.SHIPPED} "
          f"({music.SHIPPED.stat().st_size / 1e3:.0f} kB); set SHIPPED_SHA256 = {digest!r}")
    return 0


def _results(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Print every recorded claim, or (--stale) the notebooks stored before a package change."""
    if args.stale:
        stale = stale_notebooks(_root() / "notebooks")
        for book, what, changed in stale:
            print(f"{book}: stored {what} stale: {', '.join(changed)}")
        print("nothing stale" if not stale else
              "re-store with `webmm-lab run NN --profile cpu --store` (outputs), "
              "`--seeds 0-4 --store` (spread) and `--profile gpu --dry-run --report --store` "
              "(gpu estimate)")
        return 1 if stale else 0
    print(format_table(load_results()))
    return 0


def _labs(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Build the student labs from their solutions (or --check them)."""
    from .tools.labs import build
    changed = build(_root() / "labs", check=args.check)
    if args.check:
        for p in changed:
            print(f"out of date: {p} (run `webmm-lab labs build`)")
        return 1 if changed else 0
    print("\n".join(f"wrote {p}" for p in changed) or "labs are up to date")
    return 0


COMMANDS = {"run": _run, "train": _train, "colab": _colab, "times": _times, "book": _book,
            "grade": _grade, "music": _music, "results": _results, "labs": _labs}   # cmd -> handler


def main(argv: list[str] | None = None) -> int:
    """Run the `webmm-lab` command line; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    return COMMANDS[args.cmd](args, parser)


if __name__ == "__main__":
    sys.exit(main())
