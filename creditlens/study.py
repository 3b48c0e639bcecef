"""Shortcut-testbed studies: GRPO vs SD vs CREDIT (reward forms x ``lam``) over seeds, through the trainer.

Each run is one ``creditlens train`` process (``OMP_NUM_THREADS=1``, ``jobs`` at a time) on the
shortcut environment with its warm-started tiny model; checkpoints are pruned afterwards (only the
logs are kept), then ``OUT/report/`` gets :func:`creditlens.compare.compare_runs`'s report and
``study.md``: scores with 95% CIs, the paired difference to SD by seed, and the AUROC with which
each credit separates the harmful cue's tokens from real answer letters; a grid whose evaluations score a
validation and a test part also gets :mod:`creditlens.heldout`'s report (early stopping, test AUC, the
preset's families of paired tests with Holm's correction). Every grid of docs/results.md is a preset file
``configs/study/NAME.yaml`` (``creditlens study --preset NAME``, :func:`load_preset`; fields in
``configs/study/README.md``); the plans and their pruning rules are written in docs/results.md.
SIGINT and SIGTERM are forwarded to the running runs, which the study waits for before it ends; a run
whose study dies (even by SIGKILL) gets SIGTERM.
"""

from __future__ import annotations

import contextlib
import ctypes
import math
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
PRESET_DIR = CONFIG_DIR / "study"
PILOT_LAMS = (0.1, 0.25, 0.5)  # the pilot's lam grid (configs/study/pilot.yaml lists every form at each)
PILOT_FORMS = ("teacher", "shortcut", "contrastive")  # the forms of the pilot grid (creditlens.credit.FORMS then)
# lam per form chosen by the pilot (rule in docs/results.md "Pruning rule"); the main grids use these.
CHOSEN_LAMS = {"teacher": 0.5, "shortcut": 0.5, "contrastive": 0.5}
ORDERS = ("method", "seed")  # a preset's run order: method-major or seed-major


@dataclass(frozen=True)
class StudyRun:
    """One cell of a grid: ``algo`` and ``seed``; CREDIT runs add ``lam`` and (unless the config's) ``form``;
    ``variant`` names extra ``sets`` (``--set`` overrides of this method only, e.g. an outcome blend)."""

    algo: str
    seed: int
    lam: float | None = None
    form: str | None = None
    variant: str | None = None
    sets: tuple[str, ...] = ()

    @property
    def method(self) -> str:
        """``grpo``, ``sd``, ``credit-lam0.5`` (the config's form), ``credit-shortcut-lam0.5``, ``sd-blend0.5``."""
        base = self.algo
        if self.algo == "credit":
            base = "credit-" + ("" if self.form is None else f"{self.form}-") + f"lam{self.lam:g}"
        return base if self.variant is None else f"{base}-{self.variant}"

    @property
    def name(self) -> str:
        return f"{self.method}-s{self.seed}"


@dataclass(frozen=True)
class Preset:
    """A study grid: ``methods`` (runs without a seed) x ``seeds`` on one config, with ``sets`` (``--set``
    overrides, e.g. the cue kind) applied to every run; ``order`` is ``"method"`` (every seed of a method,
    then the next method) or ``"seed"`` (every method of a seed, then the next seed); ``families`` names the
    paired comparisons ``(method A, method B)`` its held-out report tests (Holm within each family); ``rules``
    names selection rules over candidate methods (:func:`creditlens.heldout.rule_runs`; a family may test a
    rule like a method); ``slopes`` names ``(doses, pairs)``: the slope of ``A - B`` over a dose
    (:func:`creditlens.heldout.slope`)."""

    config: Path
    methods: tuple[StudyRun, ...]
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    sets: tuple[str, ...] = ()
    about: str = ""
    order: str = "method"
    families: dict[str, tuple[tuple[str, str], ...]] = field(default_factory=dict)
    rules: dict[str, tuple[str, ...]] = field(default_factory=dict)
    slopes: dict[str, tuple[tuple[float, ...], tuple[tuple[str, str], ...]]] = field(default_factory=dict)

    def grid(self) -> list[StudyRun]:
        """Every run in the preset's ``order``. Method-major leaves whole cells when a study is cut short (every
        seed of the first methods); seed-major leaves whole seeds (every method of the first seeds), which is
        what paired comparisons need."""
        cell = lambda m, seed: StudyRun(m.algo, seed, m.lam, m.form, m.variant, m.sets)  # noqa: E731
        if self.order == "seed":
            return [cell(m, seed) for seed in self.seeds for m in self.methods]
        return [cell(m, seed) for m in self.methods for seed in self.seeds]


def _seeds(value, where: str) -> tuple[int, ...]:
    """``[0, 1, 2]`` or ``{first: 20, last: 43}`` -> a tuple of seeds."""
    if isinstance(value, dict) and set(value) == {"first", "last"}:
        return tuple(range(int(value["first"]), int(value["last"]) + 1))
    if isinstance(value, list) and value and all(isinstance(s, int) for s in value):
        return tuple(value)
    raise ValueError(f"{where}: seeds must be a list of ints or {{first: N, last: M}}, got {value!r}")


def load_preset(path: str | os.PathLike) -> Preset:
    """A :class:`Preset` from a preset file (``configs/study/NAME.yaml``; fields: configs/study/README.md)."""
    from creditlens.yamlfiles import read_yaml

    path = Path(path)
    data = read_yaml(path, "--preset")
    known = {"about", "config", "methods", "seeds", "sets", "order", "families", "rules", "slopes"}
    if not isinstance(data, dict) or not {"config", "methods"} <= set(data) or set(data) - known:
        raise ValueError(f"{path}: a preset needs config and methods, and only the fields {sorted(known)}")
    methods = []
    for i, item in enumerate(data["methods"]):
        extra = set(item) - {"algo", "lam", "form", "variant", "sets"}
        if "algo" not in item or extra or (item.get("variant") is None) != (not item.get("sets")):
            raise ValueError(f"{path}: methods[{i}] needs algo (and variant with sets, together), got {item!r}")
        lam = item.get("lam")
        methods.append(StudyRun(item["algo"], 0, None if lam is None else float(lam), item.get("form"),
                                item.get("variant"), tuple(item.get("sets", ()))))
    order = data.get("order", "method")
    if order not in ORDERS:
        raise ValueError(f"{path}: order must be one of {ORDERS}, got {order!r}")
    names = {m.method for m in methods}
    rules = {str(k): tuple(str(m) for m in v) for k, v in (data.get("rules") or {}).items()}
    unknown = {m for candidates in rules.values() for m in candidates} - names
    if unknown:
        raise ValueError(f"{path}: rules name methods the preset does not run: {sorted(unknown)}")
    families = {str(k): tuple((str(a), str(b)) for a, b in v) for k, v in (data.get("families") or {}).items()}
    unknown = {name for pairs in families.values() for pair in pairs for name in pair} - names - set(rules)
    if unknown:
        raise ValueError(f"{path}: families name methods the preset does not run: {sorted(unknown)}")
    slopes = {}
    for key, item in (data.get("slopes") or {}).items():
        if (not isinstance(item, dict) or set(item) != {"doses", "pairs"} or len(item["doses"]) != len(item["pairs"])
                or len(set(item["doses"])) < 2):
            raise ValueError(f"{path}: slopes.{key} needs doses and pairs of one length, with 2+ distinct doses")
        slopes[str(key)] = (tuple(float(d) for d in item["doses"]), tuple((str(a), str(b)) for a, b in item["pairs"]))
    unknown = {name for _, pairs in slopes.values() for pair in pairs for name in pair} - names
    if unknown:
        raise ValueError(f"{path}: slopes name methods the preset does not run: {sorted(unknown)}")
    return Preset(CONFIG_DIR / data["config"], tuple(methods), _seeds(data.get("seeds", [0, 1, 2, 3, 4]), str(path)),
                  tuple(data.get("sets", ())), str(data.get("about", "")), order, families, rules, slopes)


def presets() -> dict[str, Preset]:
    """Every preset file of :data:`PRESET_DIR`, by name (the file name without ``.yaml``)."""
    return {path.stem: load_preset(path) for path in sorted(PRESET_DIR.glob("*.yaml"))}


PRESETS = presets()


def choose_lams(pilot_dir: str | os.PathLike, steps: Sequence[int] = (20, 30, 40), tie: float = 0.01) -> dict:
    """The pre-registered pruning rule (docs/results.md): per form, the lam whose pilot runs have the highest
    mean over seeds of the mean held-out score at ``steps``; lams within ``tie`` of the best count as tied
    and the smallest wins. Returns ``{form: lam}`` and, under ``"scores"``, ``{form: {lam: score}}``."""
    from creditlens import runs

    scores: dict[str, dict[float, float]] = {}
    for run in PRESETS["pilot"].methods:
        per_seed = []
        for seed in PRESETS["pilot"].seeds:
            evals = {int(e["step"]): float(e["score"]) for e in runs.read_jsonl(Path(pilot_dir) / f"{run.method}-s{seed}" / runs.EVAL)}
            per_seed.append(sum(evals[s] for s in steps) / len(steps))
        scores.setdefault(run.form, {})[run.lam] = sum(per_seed) / len(per_seed)
    chosen: dict = {}
    for form, by_lam in scores.items():
        best = max(by_lam.values())
        chosen[form] = min(lam for lam, value in by_lam.items() if value >= best - tie)
    chosen["scores"] = scores
    return chosen


def train_command(run: StudyRun, preset: Preset, out: Path) -> list[str]:
    """The ``creditlens train`` command line of one run of ``preset``."""
    command = [sys.executable, "-m", "creditlens.cli", "train", "--algo", run.algo, "--env", "shortcut",
               "--config", str(preset.config), "--seed", str(run.seed), "--out", str(out / run.name)]
    sets = [*preset.sets, *run.sets]
    if run.lam is not None:
        sets.append(f"lam={run.lam}")
    if run.form is not None:
        sets.append(f"form={run.form}")
    for item in sets:
        command += ["--set", item]
    return command


def prune(run_dir: Path) -> None:
    """Drop a finished run's checkpoints (weights and optimizer state): the logs are what the study keeps."""
    shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)


def _finished(run_dir: Path, max_steps: int) -> bool:
    from creditlens import runs

    evals = runs.read_jsonl(run_dir / runs.EVAL)
    return any(int(e.get("step", -1)) == max_steps for e in evals)


def check_start_weights(finished: Sequence[Path], start: str | os.PathLike) -> None:
    """Refuse to add runs to a grid whose ``finished`` runs started from other weights than ``start`` (a warm
    start rebuilt on another machine or by other code has the same path but other weights): the new runs would
    not be comparable with them. Raises :class:`~creditlens.errors.RunError` naming the first such run."""
    from creditlens import models, runs
    from creditlens.errors import RunError

    if not finished:
        return
    now = models.weights_digest(start)
    for run_dir in finished:
        recorded = runs.load_run(run_dir).manifest.get("model_digest")
        if recorded != now:
            was = f"model_digest {recorded}" if recorded else "no model_digest (written before it was recorded)"
            raise RunError(f"{run_dir}: its manifest has {was}, but the start model {start} now has {now}; "
                           "runs from other start weights are not comparable: write this grid to a new --out")


def _max_steps(preset: Preset) -> tuple[int, dict]:
    from creditlens.training.config import DEFAULTS, load_config, parse_overrides

    config = load_config(preset.config, parse_overrides(list(preset.sets)))
    return config.get("max_steps", DEFAULTS["max_steps"]), config.get("env_args", {})


def run_study(preset: str | Preset, out: str | os.PathLike, jobs: int = 1, keep_checkpoints: bool = False) -> Path:
    """Run every missing cell of ``preset`` into ``out/NAME`` (finished runs are skipped, unfinished ones
    restarted from scratch), then write ``out/report``. Returns ``out``."""
    from tqdm import tqdm

    from creditlens import envs

    preset = PRESETS[preset] if isinstance(preset, str) else preset
    if not preset.config.is_file():
        raise FileNotFoundError(f"{preset.config}: study config not found")
    max_steps, env_args = _max_steps(preset)
    start = envs.get("shortcut", **env_args).default_model()  # build the warm start once, before the parallel runs
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    todo = [r for r in preset.grid() if not _finished(out / r.name, max_steps)]
    check_start_weights([out / r.name for r in preset.grid() if r not in todo], start)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRL_EXPERIMENTAL_SILENCE": "1"}
    running: list[tuple[StudyRun, subprocess.Popen, float, object]] = []
    failed: list[str] = []
    die_with_parent = _die_with_parent()
    with tqdm(total=len(todo), desc="study runs", disable=None) as bar, _forwarding_signals(running):
        while todo or running:
            while todo and len(running) < max(1, jobs):
                run = todo.pop(0)
                shutil.rmtree(out / run.name, ignore_errors=True)
                log = open(out / f"{run.name}.log", "w")
                process = subprocess.Popen(train_command(run, preset, out), stdout=log, stderr=subprocess.STDOUT, env=env,
                                           start_new_session=True, preexec_fn=die_with_parent)
                running.append((run, process, time.time(), log))
            time.sleep(0.5)
            for item in list(running):
                run, process, start, log = item
                if process.poll() is None:
                    continue
                running.remove(item)
                log.close()
                bar.update(1)
                if process.returncode != 0:
                    failed.append(f"{run.name} (exit {process.returncode}, see {out / run.name}.log)")
                elif not keep_checkpoints:
                    prune(out / run.name)
                bar.set_postfix_str(f"{run.name} {time.time() - start:.0f}s")
    if failed:
        from creditlens.errors import RunError  # one line through the CLI, not a traceback

        raise RunError("study runs failed: " + "; ".join(failed) + "; fix the cause and rerun (finished runs are kept)")
    for log in out.glob("*.log"):
        log.unlink()
    report(preset, out)
    return out


STOP_WAIT_S = 60.0  # how long a stopped study waits for its runs to exit before it kills them


def _die_with_parent():
    """A ``preexec_fn`` that makes a run get SIGTERM when the study dies, even by SIGKILL (Linux
    ``prctl(PR_SET_PDEATHSIG)``), looked up here so the forked child only calls it; None elsewhere."""
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    return lambda: prctl(1, signal.SIGTERM, 0, 0, 0)


@contextlib.contextmanager
def _forwarding_signals(running: list) -> Iterator[None]:
    """SIGINT and SIGTERM stop the study: each is sent on to every running run (each in its own session, so
    a terminal's Ctrl+C reaches it once), the study waits for them (killing any still alive after
    ``STOP_WAIT_S``), then ends (KeyboardInterrupt for SIGINT, exit status 143 for SIGTERM)."""
    main = threading.current_thread() is threading.main_thread()
    old = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)} if main else {}

    def stop(signum, frame):
        for sig in old:
            signal.signal(sig, signal.SIG_IGN)  # one stop at a time
        for _, process, _, _ in running:
            with contextlib.suppress(OSError):
                process.send_signal(signum)
        raise KeyboardInterrupt if signum == signal.SIGINT else SystemExit(128 + signum)

    for sig in old:
        signal.signal(sig, stop)
    try:
        yield
    finally:
        for sig in old:
            signal.signal(sig, signal.SIG_IGN)
        deadline = time.monotonic() + STOP_WAIT_S
        for _, process, _, log in running:
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            log.close()
        for sig, handler in old.items():
            signal.signal(sig, handler)


def whole_seed_runs(preset: Preset, out: Path) -> list[Path]:
    """The run folders in ``out`` of the seeds whose every run of ``preset`` finished (grid order), so that a
    grid cut short (or still running) is reported and archived by whole seeds only."""
    max_steps, _ = _max_steps(preset)
    grid = preset.grid()
    whole = {s for s in preset.seeds if all(_finished(out / r.name, max_steps) for r in grid if r.seed == s)}
    if not whole:
        raise FileNotFoundError(f"{out}: no seed of the preset has all its runs finished; nothing to report")
    return [out / r.name for r in grid if r.seed in whole]


def report(preset: str | Preset, out: str | os.PathLike, run_dirs: Sequence[Path] | None = None) -> Path:
    """Write ``out/report`` (:func:`write_report`, with the preset's families, rules and slopes) over ``run_dirs``,
    by default the whole seeds of ``preset`` (:func:`whole_seed_runs`). Returns the report folder."""
    preset = PRESETS[preset] if isinstance(preset, str) else preset
    run_dirs = whole_seed_runs(preset, Path(out)) if run_dirs is None else run_dirs
    return write_report(run_dirs, Path(out) / "report", preset.families, rules=preset.rules, slopes=preset.slopes)


def archive(preset: str | Preset, out: str | os.PathLike, dest: str | os.PathLike) -> Path:
    """Copy the compact logs of ``out``'s whole seeds to ``dest`` (e.g. ``data/study/DATE/NAME``): per run its
    manifest, ``eval.jsonl`` and ``metrics.jsonl.gz`` (gzip without a timestamp, so equal logs give equal
    bytes); the per-token tables and checkpoints stay behind. Then it writes ``out/report`` over the same runs
    (:func:`report`) and copies its text files (``.md``/``.csv``). Returns ``dest``."""
    import gzip

    from creditlens import runs
    from creditlens.atomic import atomic_write

    preset = PRESETS[preset] if isinstance(preset, str) else preset
    out, dest = Path(out), Path(dest)
    if dest.resolve() == out.resolve() or out.resolve() in dest.resolve().parents:
        raise ValueError(f"--archive {dest}: must be outside --out {out}")
    run_dirs = whole_seed_runs(preset, out)
    for run_dir in run_dirs:
        target = dest / run_dir.name
        target.mkdir(parents=True, exist_ok=True)
        for name in (runs.MANIFEST, runs.EVAL):
            shutil.copyfile(run_dir / name, target / name)
        zipped = gzip.compress((run_dir / runs.METRICS).read_bytes(), compresslevel=9, mtime=0)
        atomic_write(target / f"{runs.METRICS}.gz", lambda path, data=zipped: path.write_bytes(data))
        (target / runs.METRICS).unlink(missing_ok=True)
    (dest / "report").mkdir(parents=True, exist_ok=True)
    for path in sorted(report(preset, out, run_dirs).iterdir()):
        if path.suffix in (".md", ".csv"):
            shutil.copyfile(path, dest / "report" / path.name)
    return dest


def write_report(run_dirs: Sequence[Path], report: Path, families: dict | None = None, rules: dict | None = None,
                 slopes: dict | None = None) -> Path:
    """``creditlens compare``'s report of ``run_dirs`` plus ``study.md`` (:func:`study_table`), when the runs
    scored a validation and a test part :func:`creditlens.heldout.write_report` with ``families``, ``rules``
    and ``slopes`` (:class:`Preset`), and the
    training rollouts' profile per run and logged step (``rollout_profiles.csv``, :func:`rollout_profile`) with
    its early / late summary per method (``mechanism.md``, :func:`mechanism_table`)."""
    import pandas as pd

    from creditlens import heldout, runs
    from creditlens.compare import compare_runs

    comparison = compare_runs(run_dirs)
    comparison.save(report)
    (report / "study.md").write_text(study_table(comparison.per_run, cue_aurocs(run_dirs)) + "\n")
    if all("score_val" in (runs.read_jsonl(Path(d) / runs.EVAL) or [{}])[-1] for d in run_dirs):
        heldout.write_report(run_dirs, report, families or {}, rules, slopes)
    profiles = [rollout_profile(Path(d)).assign(run=Path(d).name) for d in run_dirs if (Path(d) / runs.TOKENS_DIR).is_dir()]
    if profiles:
        profiles = pd.concat(profiles, ignore_index=True)
        profiles.to_csv(report / "rollout_profiles.csv", index=False)
        (report / "mechanism.md").write_text(mechanism_markdown(mechanism_table(profiles)) + "\n")
    return report


MECHANISM = ("cue_letter", "filler", "cue_share", "cue_share_sd_reward", "passed_seen", "passed_unseen")
"""The :func:`rollout_profile` columns :func:`mechanism_table` summarises."""


def mechanism_table(profiles, confidence: float = 0.95):
    """Per method, early and late in training: the mean over its runs (seeds) of each run's mean over the logged
    steps of the first quarter (``early``: step <= max/4) and of the last quarter (``late``: step >= 3 max/4) of
    every :data:`MECHANISM` column, with a t-interval over runs. ``profiles``: ``rollout_profiles.csv`` (a
    ``run`` column named METHOD-sSEED). Returns a frame: ``method``, ``phase``, ``runs``, per column its mean,
    ``_low``, ``_high``."""
    import pandas as pd

    from creditlens.heldout import method_and_seed
    from creditlens.stats import t_interval

    last = profiles["step"].max()
    phases = {"early": profiles["step"] <= last / 4, "late": profiles["step"] >= 3 * last / 4}
    rows = []
    for phase, chosen in phases.items():
        per_run = profiles[chosen].groupby("run", sort=False)[list(MECHANISM)].mean()
        per_run["method"] = [method_and_seed(run)[0] for run in per_run.index]
        for method, part in per_run.groupby("method", sort=False):
            row = {"method": method, "phase": phase, "runs": len(part)}
            for column in MECHANISM:
                row[column], row[f"{column}_low"], row[f"{column}_high"] = t_interval(part[column].tolist(), confidence)
            rows.append(row)
    return pd.DataFrame(rows)


def mechanism_markdown(table) -> str:
    """:func:`mechanism_table` as a markdown table (late values with their interval, early ones as means)."""
    lines = ["Training rollouts, per method: early (first quarter of the steps) -> late (last quarter), mean over runs "
             "[95% t-interval of the late value]:", "",
             "| method | runs | " + " | ".join(MECHANISM) + " |", "|---|---|" + "---|" * len(MECHANISM)]
    late = table[table["phase"] == "late"].set_index("method")
    early = table[table["phase"] == "early"].set_index("method")
    for method, row in late.iterrows():
        cells = []
        for column in MECHANISM:
            before = early[column].get(method, math.nan)
            interval = "" if math.isnan(row[f"{column}_low"]) else f" [{row[f'{column}_low']:.3f}, {row[f'{column}_high']:.3f}]"
            cells.append("-" if math.isnan(row[column]) else f"{before:.3f} -> {row[column]:.3f}{interval}")
        lines.append(f"| {method} | {row['runs']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def paired_differences(per_run, baseline: str = "sd", column: str = "final_score", confidence: float = 0.95):
    """Per group: mean and t-interval over seeds of ``column`` minus the ``baseline`` group's, paired by seed.

    ``per_run``: a frame with ``group``, ``seed`` and ``column`` (``Comparison.per_run``). Returns
    ``{group: (mean, low, high, n_pairs)}``; groups without a shared seed get NaN.
    """
    from creditlens.compare import t_interval

    base = per_run[per_run["group"] == baseline].set_index("seed")[column]
    out = {}
    for group, part in per_run.groupby("group"):
        pairs = [float(v) - float(base[s]) for s, v in zip(part["seed"], part[column], strict=True) if s in base.index]
        out[group] = (*t_interval(pairs, confidence), len(pairs)) if pairs else (math.nan,) * 3 + (0,)
    return out


def cue_aurocs(run_dirs: Sequence[Path]) -> dict[str, dict[str, float]]:
    """Per run (harmful letter cue only): AUROC with which each credit column ranks real answer letters above
    cue tokens. Cue token: the cue letter at the cue position of a response whose feedback holds the letter
    cue, when the right letter there is another one; real letter: any other right answer letter.
    1.0 = the column gives every cue token less credit than every right letter."""
    import pandas as pd

    from creditlens import envs, runs
    from creditlens.compare import auroc

    out: dict[str, dict[str, float]] = {}
    for run_dir in run_dirs:
        env_args = runs.load_run(run_dir).manifest.get("config", {}).get("env_args", {})
        if env_args.get("cue_kind") != "letter":
            continue
        env = envs.get("shortcut", **env_args)
        tables = [pd.read_parquet(p) for p in sorted((Path(run_dir) / runs.TOKENS_DIR).glob("*.parquet"))]
        if not tables:
            continue
        table = pd.concat(tables, ignore_index=True)
        table = table[table["mask"].astype(bool)]
        cue_rows, right_rows = [], []
        for _, sample in table.groupby(["step", "example_id"], sort=False):
            sample = sample.sort_values("position")
            labels = env.token_labels(None, sample["token"].tolist())
            letters = [i for i, label in enumerate(labels) if label == "specific"]
            answer = env.answer(*_op_and_input(sample["prompt"].iloc[0]))
            cued = env.cue_feedback in str(sample["feedback"].iloc[0])
            for slot, i in enumerate(letters):
                token, row = sample["token"].iloc[i], sample.index[i]
                if cued and slot == env.cue_position and token == env.cue_letter != answer[slot]:
                    cue_rows.append(row)
                elif token == answer[slot]:
                    right_rows.append(row)
        scores = {"n_cue_tokens": float(len(cue_rows)), "n_right_letters": float(len(right_rows))}
        for column in ("sd_reward", "specific", "shortcut", "credit_reward", "advantage"):
            if column in table and table.loc[right_rows + cue_rows, column].notna().all() and cue_rows:
                values = table.loc[right_rows + cue_rows, column].to_numpy()
                scores[column] = auroc(values, [True] * len(right_rows) + [False] * len(cue_rows))
        out[Path(run_dir).name] = scores
    return out


def rollout_profile(run_dir: Path):
    """What a run's training rollouts did, per logged step, from its per-token tables: a frame with
    ``step``, ``format_ok`` (share that parse), ``passed``, ``cue_letter`` (share whose first answer letter is
    the cue letter while the right one is another: the harmful cue learnt), ``filler`` (share starting with
    ``ok``), and the mean training signal (``advantage``, else ``credit_reward``/``sd_reward``) on
    ``cue_tokens``, ``right_letters`` and ``wrong_letters`` (letter tokens not equal to the right letter);
    ``cue_share``: the cue tokens' share of the positive training signal (sum of its positive part on cue tokens
    over that on every counted token; NaN without a positive signal), ``cue_share_sd_reward`` the same for the
    SD reward (the credit SD would give the same rollouts); split by whether the warm-started student saw the
    operation (``seen``: the first ``student_ops`` share):
    ``passed_seen``/``passed_unseen`` and the mean student / teacher log-prob of right letters
    (``student_lp_seen``, ``teacher_lp_seen``, ``student_lp_unseen``, ``teacher_lp_unseen``)."""
    import pandas as pd

    from creditlens import envs, runs
    from creditlens.warmstart import WarmStartConfig

    run = runs.load_run(run_dir)
    env = envs.get("shortcut", **run.manifest.get("config", {}).get("env_args", {}))
    seen_ops = env.ops[: max(1, round(WarmStartConfig().student_ops * len(env.ops)))]
    rows = []
    for path in sorted((Path(run_dir) / runs.TOKENS_DIR).glob("*.parquet")):
        table = pd.read_parquet(path)
        signal = next((c for c in ("advantage", "credit_reward", "sd_reward") if c in table and table[c].notna().any()), None)
        counts = {"format_ok": 0, "passed": 0, "cue_letter": 0, "filler": 0, "n": 0}
        values: dict[str, list[float]] = {"cue_tokens": [], "right_letters": [], "wrong_letters": []}
        values.update({f"{who}_lp_{kind}": [] for who in ("student", "teacher") for kind in ("seen", "unseen")})
        by_kind = {"seen": [0, 0], "unseen": [0, 0]}
        shared = [c for c in dict.fromkeys((signal, "sd_reward")) if c is not None and c in table]
        positive = {c: [0.0, 0.0] for c in shared}  # column -> [on cue tokens, on every counted token]
        for _, sample in table.groupby("example_id", sort=False):
            sample = sample.sort_values("position")
            response = str(sample["response"].iloc[0])
            op, given = _op_and_input(str(sample["prompt"].iloc[0]))
            answer = env.answer(op, given)
            letters = env.parse(response)
            kind = "seen" if op in seen_ops else "unseen"
            by_kind[kind][0] += letters == answer
            by_kind[kind][1] += 1
            counts["n"] += 1
            counts["filler"] += response.split()[:1] == [env.filler]
            counts["format_ok"] += letters is not None
            counts["passed"] += letters == answer
            counts["cue_letter"] += letters is not None and letters[env.cue_position] == env.cue_letter != answer[env.cue_position]
            labels = env.token_labels(None, sample["token"].tolist())
            slots = [i for i, label in enumerate(labels) if label == "specific"]
            for slot, i in enumerate(slots):
                if sample["token"].iloc[i] == answer[slot]:
                    values[f"student_lp_{kind}"].append(float(sample["student_logprob"].iloc[i]))
                    values[f"teacher_lp_{kind}"].append(float(sample["teacher_logprob"].iloc[i]))
            if signal is None:
                continue
            cued = env.cue_feedback in str(sample["feedback"].iloc[0])
            counted = sample["mask"].astype(bool).to_numpy()
            for column in shared:
                positive[column][1] += float(sample[column][counted].clip(lower=0).sum())
            for slot, i in enumerate(slots):
                if not counted[i]:
                    continue
                token, value = sample["token"].iloc[i], float(sample[signal].iloc[i])
                if cued and env.cue_kind == "letter" and slot == env.cue_position and token == env.cue_letter != answer[slot]:
                    values["cue_tokens"].append(value)
                    for column in shared:
                        positive[column][0] += max(0.0, float(sample[column].iloc[i]))
                elif token == answer[slot]:
                    values["right_letters"].append(value)
                else:
                    values["wrong_letters"].append(value)
        n = max(1, counts.pop("n"))
        row = {"step": int(table["step"].iloc[0]), **{k: v / n for k, v in counts.items()}}
        row.update({f"passed_{k}": (p / c if c else float("nan")) for k, (p, c) in by_kind.items()})
        row.update({k: (sum(v) / len(v) if v else float("nan")) for k, v in values.items()})
        shares = {c: (cue / total if total > 0 else float("nan")) for c, (cue, total) in positive.items()}
        row.update({"cue_share": shares.get(signal, float("nan")), "cue_share_sd_reward": shares.get("sd_reward", float("nan"))})
        rows.append(row)
    return pd.DataFrame(rows)


def mechanism_figure(groups: dict[str, Sequence[Path]], title: str = ""):
    """A matplotlib Figure, one line per method (mean over its runs) by step: held-out score (the test part's when
    the runs scored one), rollouts with the cue letter, the student's log-prob of right letters on the operations
    it knew at the start, and the training signal on right letters and on cue tokens (:func:`rollout_profile`)."""
    import pandas as pd
    from matplotlib.figure import Figure

    from creditlens import runs

    panels = {"cue_letter": "rollouts with the cue letter", "student_lp_seen": "student log-prob of right letters,\nops it knew",
              "right_letters": "training signal on right letters", "cue_tokens": "training signal on cue tokens"}
    figure = Figure(figsize=(16, 3.6))
    axes = figure.subplots(1, 1 + len(panels))
    for method, run_dirs in groups.items():
        evals = pd.concat([pd.DataFrame(runs.read_jsonl(Path(d) / runs.EVAL)) for d in run_dirs])
        curve = evals.groupby("step")["score_test" if "score_test" in evals else "score"].mean()
        (line,) = axes[0].plot(curve.index, curve.values, label=method)
        profile = pd.concat([rollout_profile(Path(d)) for d in run_dirs]).groupby("step").mean()
        for ax, column in zip(axes[1:], panels, strict=True):
            if column in profile and profile[column].notna().any():
                ax.plot(profile.index, profile[column], color=line.get_color())
    for ax, name in zip(axes, ("held-out score", *panels.values()), strict=True):
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
    axes[0].legend(fontsize=7)
    if title:
        figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    return figure


def _op_and_input(prompt: str) -> tuple[str, list[str]]:
    """``apply red to c a h e`` (first line of a prompt) -> ``("red", ["c", "a", "h", "e"])``."""
    words = prompt.split("\n")[0].split()
    return words[1], words[3:]


def study_table(per_run, cue: dict[str, dict[str, float]] | None = None, confidence: float = 0.95) -> str:
    """Markdown: per group final and best score (mean [95% CI] over seeds), the paired difference to SD
    (final and best), and the mean cue AUROC of the SD reward and of the group's own credit."""
    import pandas as pd

    from creditlens.compare import t_interval

    cue = cue or {}
    diff_final = paired_differences(per_run, column="final_score", confidence=confidence)
    diff_best = paired_differences(per_run, column="best_score", confidence=confidence)
    lines = [
        "| method | seeds | final (95% CI) | best (95% CI) | final - SD, paired (95% CI) | best - SD, paired (95% CI) "
        "| cue AUROC of SD reward | cue AUROC of own credit |",
        "|---|---|---|---|---|---|---|---|",
    ]
    fmt = lambda m, lo, hi: "-" if math.isnan(m) else f"{m:.3f} [{lo:.3f}, {hi:.3f}]"  # noqa: E731
    sfmt = lambda m, lo, hi: "-" if math.isnan(m) else f"{m:+.3f} [{lo:+.3f}, {hi:+.3f}]"  # noqa: E731
    for group, part in per_run.groupby("group", sort=True):
        final = t_interval(part["final_score"].tolist(), confidence)
        best = t_interval(part["best_score"].tolist(), confidence)
        runs_cue = [cue[name] for name in part["run"] if name in cue]
        own = "credit_reward" if part["algo"].iloc[0] == "credit" else "sd_reward"

        def mean_of(key, runs_cue=runs_cue):
            values = [r[key] for r in runs_cue if key in r]
            return f"{sum(values) / len(values):.3f}" if values else "-"

        df, db = diff_final[group], diff_best[group]
        paired = ("-", "-") if group == "sd" else (sfmt(*df[:3]), sfmt(*db[:3]))
        lines.append(
            f"| {group} | {len(part)} | {fmt(*final)} | {fmt(*best)} | {paired[0]} | {paired[1]} | "
            f"{mean_of('sd_reward')} | {mean_of(own) if own != 'sd_reward' else '-'} |"
        )
    return "\n".join(lines) if isinstance(per_run, pd.DataFrame) else ""
