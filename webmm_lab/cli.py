"""The `webmm-lab` command: run notebooks headless, print claims, build the student labs.

    webmm-lab run 00 --profile cpu        # execute notebook 00 in a fresh kernel
    webmm-lab run all --profile smoke
    webmm-lab results                     # every recorded claim, as a table
    webmm-lab labs build [--check]        # regenerate labs/labNN_*.ipynb from labs/solutions/
    webmm-lab train clip [--steps N ...]  # train CLIP on the synthetic world; under torchrun:
    torchrun --standalone --nproc_per_node=2 --no-python webmm-lab train clip
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from .claims import format_table, load_results
from .paths import course_root, results_dir
from .profiles import PROFILES


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
                 store: bool = False) -> tuple[bool, float, str]:
    """Execute `path` top to bottom in a fresh kernel; write the executed copy to `out_dir`.

    Returns (ok, seconds, error summary). With `store`, also writes the outputs back to `path`.
    """
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    nb = nbformat.read(path, as_version=4)
    env = {**os.environ, "WEBMM_PROFILE": profile, "WEBMM_RESULTS": str(out_dir.resolve())}
    client = NotebookClient(nb, timeout=cell_timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}})
    t0 = time.perf_counter()
    error = ""
    try:
        client.execute(env=env)
    except CellExecutionError as e:
        error = str(e).strip().splitlines()[-1] if str(e).strip() else repr(e)
    seconds = time.perf_counter() - t0
    out_dir.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, out_dir / path.name)
    if store and not error:
        nbformat.write(nb, path)
    return not error, seconds, error


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="webmm-lab", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    p_run = sub.add_parser("run", help="execute notebooks in a fresh kernel and print their claims")
    p_run.add_argument("notebooks", nargs="+", help="numbers or names (00, 2, gpt) or 'all'")
    p_run.add_argument("--profile", choices=PROFILES, default=None,
                       help="smoke | cpu | gpu (default: $WEBMM_PROFILE, else gpu with CUDA, else cpu)")
    p_run.add_argument("--store", action="store_true",
                       help="also write the executed outputs back into notebooks/ (maintainers)")
    p_run.add_argument("--cell-timeout", type=int, default=1200, help="seconds per cell")
    sub.add_parser("results", help="print every recorded claim as a table")
    p_labs = sub.add_parser("labs", help="lab notebooks")
    p_labs.add_argument("action", choices=["build"])
    p_labs.add_argument("--check", action="store_true", help="only report out-of-date labs")
    p_train = sub.add_parser("train", help="train a course model from the command line "
                             "(also under torchrun); `webmm-lab train clip --help` for options")
    p_train.add_argument("model", choices=["clip"])
    p_train.add_argument("options", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)

    if args.cmd == "run":
        from .profiles import active_profile
        profile = args.profile or active_profile()
        root = _root()
        out = results_dir()
        books = resolve_notebooks(args.notebooks, root / "notebooks")
        failed = []
        for book in books:
            print(f"running {book.name} (profile {profile}) ...", flush=True)
            ok, seconds, error = run_notebook(book, profile, out, args.cell_timeout, args.store)
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
    if args.cmd == "train":
        from .clip_train import main as train_clip_main
        return train_clip_main(args.options)
    if args.cmd == "results":
        print(format_table(load_results()))
        return 0
    if args.cmd == "labs":
        from .labs import build
        changed = build(_root() / "labs", check=args.check)
        if args.check:
            for p in changed:
                print(f"out of date: {p} (run `webmm-lab labs build`)")
            return 1 if changed else 0
        print("\n".join(f"wrote {p}" for p in changed) or "labs are up to date")
        return 0
    return 2


if __name__ == "__main__":
    sys.exit(main())
