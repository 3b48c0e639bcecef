"""Shared pieces of the dashboard pages: where the data lives, cached loaders, the source pickers.

The runs directory comes from ``--runs-dir DIR`` after ``--`` on the ``streamlit run`` line, else
the ``CREDITLENS_RUNS_DIR`` environment variable, else ``data/runs`` of the repository, else
``./runs``; the sidebar can change it. Under it the app finds run directories (``manifest.json``)
and scored example sets (``tokens.parquet`` with an optional ``summary.parquet``, as written by
``creditlens score --out DIR``). Every read goes through :mod:`creditlens.runs` and
:mod:`creditlens.schema`; a read error becomes a message in the page, never a traceback.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import streamlit as st

from creditlens import runs, schema, viz

RUNS_DIR_ENV = "CREDITLENS_RUNS_DIR"
REPO_RUNS = Path(__file__).resolve().parents[1] / "data" / "runs"  # present in a source checkout (app/ is top-level)
READ_ERRORS = (runs.RunError, schema.SchemaError, OSError, ValueError, KeyError)


def default_runs_dir() -> str:
    """``--runs-dir`` argument, then ``$CREDITLENS_RUNS_DIR``, then ``data/runs`` of the repo, then ``runs``."""
    argv = sys.argv[1:]
    if "--runs-dir" in argv and argv.index("--runs-dir") + 1 < len(argv):
        return argv[argv.index("--runs-dir") + 1]
    if os.environ.get(RUNS_DIR_ENV):
        return os.environ[RUNS_DIR_ENV]
    return str(REPO_RUNS) if REPO_RUNS.is_dir() else "runs"


def setup(title: str) -> Path:
    """Page config, title and the sidebar's runs-directory box; returns the runs directory."""
    st.set_page_config(page_title=f"creditlens · {title}", page_icon="🔎", layout="wide")
    if "runs_dir" not in st.session_state:
        st.session_state["runs_dir"] = default_runs_dir()
    st.sidebar.text_input(
        "Runs directory",
        value=st.session_state["runs_dir"],
        key="runs_dir_box",
        on_change=lambda: st.session_state.update(runs_dir=st.session_state["runs_dir_box"]),
        help=f"Run directories and scored example sets are searched below it (env var {RUNS_DIR_ENV}).",
    )
    st.title(title)
    return Path(st.session_state["runs_dir"]).expanduser()


def fail(message: str) -> None:
    """Show ``message`` as an error and stop the page."""
    st.error(message)
    st.stop()


def _stamp(path: Path) -> float:
    """Latest modification time under ``path`` (cache key so that growing runs are re-read)."""
    if not path.exists():
        return 0.0
    if path.is_file():
        return path.stat().st_mtime
    return max([path.stat().st_mtime] + [p.stat().st_mtime for p in path.rglob("*") if p.is_file()])


@st.cache_data(show_spinner=False)
def _discover(root: str, stamp: float) -> tuple[list[str], list[str], list[str]]:
    base = Path(root)
    run_dirs, errors = [], []
    for manifest in sorted(base.rglob(runs.MANIFEST)):
        try:
            runs.load_run(manifest.parent)
            run_dirs.append(str(manifest.parent))
        except runs.RunError as error:
            errors.append(str(error))
    scored = sorted(str(p.parent) for p in base.rglob("tokens.parquet") if not (p.parent / runs.MANIFEST).exists())
    return run_dirs, scored, errors


@dataclass(frozen=True)
class Catalog:
    """What the runs directory holds: run paths, scored example sets and manifests that failed."""

    root: Path
    runs: list[str]
    scored: list[str]
    errors: list[str]


def catalog(root: Path) -> Catalog:
    """Find runs and scored sets under ``root`` (or ``root`` itself: a run, a scored set or a per-token
    ``.parquet`` file); stops the page with a message when it does not exist."""
    if root.is_file() and root.suffix == ".parquet":
        return Catalog(root.parent, [], [str(root)], [])
    if root.is_file():
        fail(f"`{root}` is a file, not a directory. Set the runs directory to the folder that holds the run "
             "directories and scored sets, or to one per-token `.parquet` file.")
    if not root.is_dir():
        fail(f"Runs directory `{root}` does not exist. Set it in the sidebar, pass it to "
             f"`creditlens app DIR`, or set {RUNS_DIR_ENV}.")
    run_dirs, scored, errors = _discover(str(root), _stamp(root))
    for error in errors:
        st.warning(f"Skipped a run directory: {error}")
    return Catalog(root, run_dirs, scored, errors)


def relative(path: str, root: Path) -> str:
    try:
        return str(Path(path).relative_to(root)) or "."
    except ValueError:
        return path


@st.cache_data(show_spinner=False)
def _runs_table(paths: tuple[str, ...], stamp: float) -> pd.DataFrame:
    return viz.runs_table([runs.load_run(p) for p in paths])


def runs_table(cat: Catalog) -> pd.DataFrame:
    """Cached :func:`viz.runs_table` of every run of the catalog."""
    return _runs_table(tuple(cat.runs), _stamp(cat.root))


@st.cache_data(show_spinner=False, max_entries=16)
def _tokens(run_path: str, step: int | None, stamp: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    run = runs.load_run(run_path)
    table = run.tokens(step).drop(columns=["contrast_logprobs"], errors="ignore")
    return table, viz.examples_index(table)


@st.cache_data(show_spinner=False, max_entries=16)
def _scored(path: str, stamp: float) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame | None]:
    base = Path(path)
    table = schema.read_token_table(base / "tokens.parquet" if base.is_dir() else base)
    table = table.drop(columns=["contrast_logprobs"], errors="ignore")
    summary_path = (base if base.is_dir() else base.parent) / "summary.parquet"
    summary = None
    if summary_path.exists():
        try:
            summary = pd.read_parquet(summary_path)
        except Exception as error:  # pyarrow raises several types for a damaged file
            raise schema.SchemaError(f"{summary_path}: not a readable Parquet file ({error})") from error
    return table, viz.examples_index(table), summary


@dataclass(frozen=True)
class Source:
    """A loaded per-token table, its index of responses, an optional summary, a label, and for a run
    its path and its CREDIT settings (``form``, ``lam``: :func:`viz.run_settings`)."""

    label: str
    table: pd.DataFrame
    index: pd.DataFrame
    summary: pd.DataFrame | None
    run_path: str | None
    settings: dict | None = None


def pick_source(cat: Catalog, allow_all_steps: bool = False, key: str = "", prefer: str = "Run") -> Source:
    """Sidebar widgets to choose a run and step, or a scored example set; loads it (cached).

    ``prefer`` ("Run" or "Scored examples") is the default source when both exist.
    """
    kinds = [k for k, found in (("Run", cat.runs), ("Scored examples", cat.scored)) if found] + ["File path"]
    if len(kinds) == 1:
        st.info(f"No run directories or scored example sets under `{cat.root}`. Train a run "
                "(`creditlens train ... --out DIR/NAME`), score examples (`creditlens score ... --out DIR/NAME`), "
                "or type the path of a per-token table in the sidebar.")
    kind = st.sidebar.radio("Data source", kinds, index=kinds.index(prefer) if prefer in kinds else 0,
                            key=f"source_kind{key}")
    try:
        if kind == "Run":
            run_path = st.sidebar.selectbox("Run", cat.runs, format_func=lambda p: relative(p, cat.root),
                                            key=f"run{key}")
            steps = runs.load_run(run_path).token_steps()
            if not steps:
                fail(f"Run `{relative(run_path, cat.root)}` has no per-token tables yet "
                     f"(`{runs.TOKENS_DIR}/step_*.parquet`).")
            options = {f"step {s}": s for s in reversed(steps)} | ({"all steps": None} if allow_all_steps else {})
            step = options[st.sidebar.selectbox("Step", list(options), key=f"step{key}")]
            table, index = _tokens(run_path, step, _stamp(Path(run_path) / runs.TOKENS_DIR))
            label = f"{relative(run_path, cat.root)} · " + ("all steps" if step is None else f"step {step}")
            return Source(label, table, index, None, run_path, viz.run_settings(runs.load_run(run_path)))
        if kind == "Scored examples":
            path = st.sidebar.selectbox("Scored set", cat.scored, format_func=lambda p: relative(p, cat.root),
                                        key=f"scored{key}")
        else:
            path = st.sidebar.text_input("Scored directory or .parquet file", key=f"path{key}")
            if not path:
                st.info("Type the path of a scored directory (`creditlens score ... --out DIR`) or of a "
                        "per-token `.parquet` file in the sidebar.")
                st.stop()
            if not Path(path).exists():
                fail(f"`{path}` does not exist.")
        table, index, summary = _scored(path, _stamp(Path(path)))
        return Source(relative(path, cat.root), table, index, summary, None)
    except READ_ERRORS as error:
        fail(f"Could not read this data: {error}")
        raise


def example_label(row: pd.Series) -> str:
    """``ID #sample · SD sum · reward · tokens``: the identifying part first, so that a narrow sidebar
    cuts only the statistics (the step is chosen in its own box)."""
    parts = [str(row["example_id"]) + (f" #{row['sample']}" if "sample" in row else ""), f"SD {row['sd_sum']:+.2f}"]
    if "outcome_reward" in row and pd.notna(row["outcome_reward"]):
        parts.append(f"reward {row['outcome_reward']:g}")
    return " · ".join(parts + [f"{row['n_tokens']} tokens"])


def pick_example(source: Source, key: str = "") -> pd.DataFrame:
    """Sidebar select box of the responses of ``source`` (opening on the first with counted tokens);
    returns the rows of the chosen one."""
    if source.index.empty:
        fail(f"`{source.label}` has no tokens.")
    # one widget per source: switching source or step opens on its first counted response, and never
    # shows the previous source's label for the same row number
    choice = st.sidebar.selectbox("Response", range(len(source.index)), key=f"example{key}:{source.label}",
                                  index=viz.first_counted(source.index),
                                  format_func=lambda i: example_label(source.index.iloc[i]))
    return viz.select_example(source.table, source.index.iloc[choice].to_dict())


def settings_caption(tokens: pd.DataFrame, settings: dict | None = None) -> str:
    """``algo · form · lambda · pool · K`` of the rows shown: the table's own columns first, then
    ``settings`` (a run's :func:`viz.run_settings`; ``form`` is absent from tables and runs written
    before reward forms existed)."""
    head = tokens.iloc[0]
    settings = settings or {}
    parts = [f"algo = {head['algo']}" if "algo" in tokens.columns else None]
    form = head["form"] if "form" in tokens.columns else settings.get("form")
    lam = head["lam"] if "lam" in tokens.columns else settings.get("lam")
    if form is not None:
        parts.append(f"form = {form}")
    if lam is not None and pd.notna(lam):
        parts.append(f"lambda = {float(lam):g}")
    if "pool" in tokens.columns:
        parts.append(f"pool = {head['pool']}")
    if "n_contrast" in tokens.columns:
        parts.append(f"K = {head['n_contrast']}")
    return " · ".join(p for p in parts if p)


def show_prompt(prompt: object) -> None:
    """A prompt stored as chat messages (JSON) as one chat bubble per message; plain text as a code box."""
    messages = viz.chat_messages(prompt)
    if messages is None:
        st.code(str(prompt), language=None, wrap_lines=True)
        return
    for message in messages:
        with st.chat_message(message["role"] if message["role"] in ("user", "assistant") else "user",
                             avatar=None if message["role"] in ("user", "assistant") else "⚙️"):
            st.caption(message["role"])
            st.text(message["content"])
