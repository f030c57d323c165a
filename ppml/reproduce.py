"""Run every paper notebook headless: ``python -m ppml.reproduce [--scale smoke|cpu|paper] [NB …]``.

Each notebook is executed by papermill in its own kernel process, with working directory
``notebooks/`` and the parameters of ``notebooks/params/<scale>.yaml`` injected (the smoke
file is empty by design: smoke scale *is* the notebooks' defaults). The ``cpu`` scale runs only
the notebooks ``cpu.yaml`` names (those whose central effect needs the full Fashion-MNIST and
longer training than smoke affords); the others' smoke run already shows theirs. Executed notebooks go to
``build/<scale>/``; a failed one keeps papermill's error notebook there. Each notebook writes
``figures/<stem>/…`` and ``results.json``; the runner then writes ``figures/index.md`` (paper
artifact → file → scale) and exits non-zero if any requested notebook failed or is missing.

At ``smoke`` and ``cpu`` scale the notebooks run side by side (``--jobs``, default one per
core, each kernel on ``cores / jobs`` threads); the speed benchmark (:data:`RUN_ALONE`) runs
afterwards, alone. At ``paper`` scale they run one at a time.

``--dry-run`` prepares every notebook (parameters injected, nothing executed) and checks
that every data set and weight file the scale needs is present, listing what is missing and
how to get it.

A parameter file maps a notebook stem to the parameters it overrides; the reserved key
``requires`` lists extra needs as ``dataset:NAME`` or ``weights:NAME``. Data sets named by a
notebook's ``dataset``/``datasets`` parameter (default or override) are required
automatically::

    03_isotropic_etc:
      dataset: cifar10
      epochs: 300
      requires: [weights:lpips-alex]
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from ppml.publish import (ARTIFACTS, NOTEBOOKS, _rel, finish_notebook, inline_figures, mathjax_dir,  # noqa: F401
                          write_html_report, write_index)
from ppml.report import SCALES, figures_root, repo_root
from ppml.utils import atomic_write_text

__all__ = ["NOTEBOOKS", "ARTIFACTS", "Requirement", "register_weights", "declared_parameters",
           "load_params", "dirty_cells", "requirements_for", "check_requirement", "run", "default_jobs",
           "RUN_ALONE", "write_index",
           "inline_figures", "finish_notebook", "write_html_report", "main"]

RESERVED_KEYS = {"requires"}


class RunnerError(ValueError):
    """A problem with the runner's input (notebook names, parameter files)."""


# --------------------------------------------------------------------------- requirements
@dataclasses.dataclass(frozen=True)
class Requirement:
    """Something a notebook needs at a scale: ``kind`` is ``dataset`` or ``weights``."""

    kind: str
    name: str

    def __str__(self) -> str:
        return f"{self.kind}:{self.name}"

    @classmethod
    def parse(cls, text: str) -> "Requirement":
        kind, sep, name = str(text).partition(":")
        if not sep or kind not in ("dataset", "weights") or not name:
            raise RunnerError(f"requirement {text!r} must look like 'dataset:NAME' or 'weights:NAME'")
        return cls(kind, name)


#: weights name → (is it present? , how to get it). Modules that load weights register here.
_WEIGHTS: dict[str, tuple[Callable[[], bool], str]] = {}


def register_weights(name: str, available: Callable[[], bool], how_to_get: str) -> None:
    """Make ``weights:NAME`` checkable by ``--dry-run`` (called by the modules that load them)."""
    _WEIGHTS[name] = (available, how_to_get)


def check_requirement(req: Requirement) -> tuple[bool, str]:
    """Return (present, how to get it) for one requirement."""
    if req.kind == "dataset":
        from ppml import datasets

        try:
            return bool(datasets.dataset_available(req.name)), datasets.dataset_requirements(req.name)
        except ValueError as e:  # unknown data set name
            return False, str(e)
    entry = _WEIGHTS.get(req.name)
    if entry is None:
        _load_weight_registrations()
        entry = _WEIGHTS.get(req.name)
    if entry is None:
        return False, f"no module registers weights {req.name!r}; known: {sorted(_WEIGHTS) or 'none'}"
    available, how = entry
    return bool(available()), how


def _load_weight_registrations() -> None:
    """Register the weight files the library's modules declare (``WEIGHTS`` tables; a module
    whose optional dependencies are missing is skipped)."""
    import importlib

    for mod in ("ppml.pretrained", "ppml.metrics"):
        try:
            table = getattr(importlib.import_module(mod), "WEIGHTS", {})
        except ImportError:
            continue
        for name, (available, how) in table.items():
            _WEIGHTS.setdefault(name, (available, how))


# --------------------------------------------------------------------------- notebooks and parameters
def declared_parameters(path: Path) -> dict[str, Any]:
    """The parameters a notebook declares (name → default value) from its ``parameters`` cell."""
    import papermill

    info = papermill.inspect_notebook(str(path))
    if not info:
        raise RunnerError(f"{path.name} has no cell tagged 'parameters': tag its first code cell "
                          "'parameters' (papermill needs it to inject the scale's values)")
    out = {}
    for name, meta in info.items():
        try:
            out[name] = ast.literal_eval(meta["default"])
        except (ValueError, SyntaxError):
            out[name] = _Expression(meta["default"])  # an expression: keep its source text
    return out


class _Expression(str):
    """A parameter default that is an expression, not a literal (its type is unknown)."""


def dirty_cells(path: Path) -> list[int]:
    """Indices of code cells that carry outputs or execution counts (commit notebooks stripped).

    ``make strip`` (nbstripout) cleans them.
    """
    import nbformat

    nb = nbformat.read(str(path), as_version=4)
    return [i for i, c in enumerate(nb.cells) if c.cell_type == "code"
            and (c.get("outputs") or c.get("execution_count") is not None)]


def load_params(scale: str, params_dir: Path) -> dict[str, dict[str, Any]]:
    """Read ``<params_dir>/<scale>.yaml``: a mapping of notebook stem → parameter mapping."""
    import yaml

    path = params_dir / f"{scale}.yaml"
    if not path.exists():
        raise RunnerError(f"parameter file {path} is missing (expected one per scale: {SCALES})")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise RunnerError(f"{path} is not valid YAML: {e}") from None
    if not isinstance(data, dict) or not all(isinstance(v, (dict, type(None))) for v in data.values()):
        raise RunnerError(f"{path} must map each notebook stem to a mapping of parameters")
    return {str(k): dict(v or {}) for k, v in data.items()}


def check_parameters(stem: str, declared: Mapping[str, Any], given: Mapping[str, Any]) -> None:
    """Reject parameters the notebook does not declare (a typo would silently do nothing)."""
    unknown = sorted(set(given) - set(declared))
    if unknown:
        raise RunnerError(f"{stem} does not declare parameter(s) {', '.join(unknown)}; "
                          f"it declares: {', '.join(sorted(declared))}")
    if "scale" not in declared:
        raise RunnerError(f"{stem} must declare a 'scale' parameter in its parameters cell "
                          "(the runner injects it, and the notebook prints it beside every number)")
    for name, value in given.items():
        default = declared[name]
        if not _same_kind(default, value):
            raise RunnerError(f"{stem}: parameter {name} = {value!r} is a {type(value).__name__}, but the "
                              f"notebook's default {default!r} is a {type(default).__name__}; write it as "
                              f"the notebook does (e.g. epochs: 3, not epochs: \"3\")")


def _same_kind(default: Any, value: Any) -> bool:
    """Whether ``value`` may replace a parameter whose default is ``default``: the same kind of
    literal (an int for a float is fine), ``None`` for anything and anything for ``None`` (an
    optional parameter) or for an expression default."""
    if value is None or default is None or isinstance(default, _Expression):
        return True
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(default, bool) and isinstance(value, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float))
    for kind in (int, str, dict):
        if isinstance(default, kind):
            return isinstance(value, kind)
    if isinstance(default, (list, tuple)):
        return isinstance(value, (list, tuple))
    return True


def requirements_for(params: Mapping[str, Any], requires: Iterable[str] = ()) -> list[Requirement]:
    """Data sets named by ``dataset``/``datasets`` parameters plus the explicit ``requires``.

    >>> [str(r) for r in requirements_for({"dataset": "cifar10", "epochs": 3}, ["weights:lpips-alex"])]
    ['dataset:cifar10', 'weights:lpips-alex']
    """
    reqs: list[Requirement] = []
    for key, value in params.items():
        if key == "dataset" or key.endswith("_dataset"):
            values = [value]
        elif key == "datasets" or key.endswith("_datasets"):
            values = list(value) if isinstance(value, (list, tuple)) else [value]
        else:
            continue
        reqs += [Requirement("dataset", str(v)) for v in values if v]
    reqs += [Requirement("weights", m) for m in _pretrained_models(params)]
    if isinstance(requires, str):  # one requirement written without the brackets
        requires = [requires]
    if not isinstance(requires, (list, tuple)):
        raise RunnerError(f"requires must be a list like [weights:lpips-alex, dataset:cifar10], got {requires!r}")
    reqs += [Requirement.parse(r) for r in requires]
    return list(dict.fromkeys(reqs))


def _pretrained_models(value: Any) -> list[str]:
    """Models that nested parameters load with pretrained weights, e.g. ``vit: {cifar10: {model:
    vit_b16, pretrained: true}}`` → ``["vit_b16"]`` (each a ``weights:`` requirement)."""
    found: list[str] = []
    if isinstance(value, Mapping):
        if value.get("pretrained") is True and isinstance(value.get("model"), str):
            found.append(value["model"])
        for v in value.values():
            found += _pretrained_models(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            found += _pretrained_models(v)
    return found


def resolve(names: Sequence[str], notebooks_dir: Path) -> list[str]:
    """Notebook stems from names, numbers ("03") or paths; all notebooks when ``names`` is empty."""
    found = sorted(p.stem for p in notebooks_dir.glob("*.ipynb"))
    known = list(NOTEBOOKS) + [s for s in found if s not in NOTEBOOKS]
    if not names:
        return known
    out = []
    for name in names:
        stem = Path(name).stem if name.endswith(".ipynb") else name
        if name.endswith(".ipynb") and Path(name).parent != Path() and \
                Path(name).resolve().parent != notebooks_dir.resolve():
            # The runner runs notebooks/<stem>.ipynb; running it for another copy would be a lie.
            raise RunnerError(f"{name} is not in {notebooks_dir}: the runner only runs the repository's "
                              f"notebooks; name one by stem or number ({stem}), or copy your version "
                              f"over {notebooks_dir / Path(name).name}")
        matches = [s for s in known if s == stem or s.split("_", 1)[0] == stem]
        if len(matches) != 1:
            raise RunnerError(f"unknown notebook {name!r}; choose from: {', '.join(known)}")
        out.append(matches[0])
    return out


def cpu_scale_stems(stems: Sequence[str], notebooks_dir: Path, *, explicit: bool) -> list[str]:
    """The notebooks to run at ``cpu`` scale: those ``cpu.yaml`` names. Without names, the others
    are left out (their smoke run shows their effects); a named one without an entry is an error."""
    have = load_params("cpu", notebooks_dir / "params")
    missing = [s for s in stems if s not in have]
    if explicit and missing:
        raise RunnerError(f"{', '.join(missing)} ha{'s' if len(missing) == 1 else 've'} no cpu-scale configuration in "
                          f"{notebooks_dir / 'params' / 'cpu.yaml'} (its effects show at smoke scale): run "
                          f"{'it' if len(missing) == 1 else 'them'} with --scale smoke, or add an entry")
    return [s for s in stems if s in have]


# --------------------------------------------------------------------------- running
@dataclasses.dataclass
class Outcome:
    stem: str
    status: str  # ok | failed | missing | prepared | blocked
    seconds: float = 0.0
    output: Path | None = None
    message: str = ""


def _kernel_env(scale: str, figures: Path) -> dict[str, str]:
    env = dict(os.environ)
    # The kernel spec's argv is "python": make it this interpreter's, whatever PATH says.
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    # No MPLBACKEND override: the kernel's inline backend is JupyterLab's, and Report.figure
    # shows each figure inline and closes it, so executed and interactive notebooks look alike.
    env.pop("MPLBACKEND", None)
    env.update(PPML_SCALE=scale, PPML_FIGURES=str(figures))
    env.setdefault("PPML_QUIET", "1")
    return env


def _execute(src: Path, dst: Path, params: dict, cwd: Path, env: dict, prepare_only: bool) -> None:
    import papermill

    old = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)  # the kernel inherits the runner's environment
    try:
        papermill.execute_notebook(str(src), str(dst), parameters=params, kernel_name="python3",
                                   cwd=str(cwd), progress_bar=False, prepare_only=prepare_only,
                                   request_save_on_cell_execute=True,
                                   # the kernel's start-up warnings (e.g. "running over TCP without
                                   # encryption" on a loopback-only kernel) are noise in every run
                                   extra_arguments=["--IPKernelApp.log_level=ERROR"])
    finally:
        os.environ.clear()
        os.environ.update(old)


def _execute_job(src: Path, dst: Path, params: dict, cwd: Path, env: dict) -> tuple[float, str | None]:
    """Execute one notebook (in a worker process when ``--jobs`` > 1): ``(start time, error)``,
    the error as papermill's ``"EName: value"`` (a string, so it crosses the process boundary)."""
    t0 = time.time()
    try:
        _execute(src, dst, params, cwd, env, prepare_only=False)
        return t0, None
    except Exception as e:  # papermill's execution error: the error notebook is kept at dst
        return t0, f"{getattr(e, 'ename', type(e).__name__)}: {getattr(e, 'evalue', e)}"


#: Notebooks that measure speed: with ``--jobs`` > 1 they run after the others, alone on the
#: machine with every core, so that no other notebook's kernel skews their timings.
RUN_ALONE = ("06_benchmark",)


def cpu_cores() -> int:
    """The cores this process may run on (the affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def default_jobs(scale: str, n_notebooks: int, cores: int | None = None) -> int:
    """How many notebooks run at once by default: at ``paper`` scale one (each wants the whole
    GPU); at ``smoke`` and ``cpu`` scale one per core, up to the number of notebooks — on a
    small CPU, notebooks side by side on one thread each finish sooner than one after another
    on all threads (small models do not keep several threads busy).

    >>> default_jobs("smoke", 6, cores=2), default_jobs("paper", 6, cores=16), default_jobs("cpu", 3, cores=16)
    (2, 1, 3)
    """
    if scale == "paper":
        return 1
    return max(1, min(n_notebooks, cores if cores is not None else cpu_cores()))


def run(stems: Sequence[str], *, scale: str = "smoke", dry_run: bool = False,
        notebooks_dir: Path | None = None, build_dir: Path | None = None,
        figures_dir: Path | None = None, log: Callable[[str], None] = print,
        rehearse: bool = False, rehearse_root: Path | None = None, ddp: bool = True,
        jobs: int = 1, _rehearsal: dict | None = None) -> list[Outcome]:
    """Execute (or, with ``dry_run``, prepare and check) the notebooks; one line per notebook.

    ``jobs``: notebooks executed at once, each kernel with ``cores // jobs`` threads
    (``OMP_NUM_THREADS``, unless set already); the notebooks of :data:`RUN_ALONE` run after
    the others, alone. Lines are logged as notebooks finish; outcomes come back in ``stems``
    order.

    ``rehearse`` (paper scale only): run the paper path on stand-in data (:mod:`ppml.rehearsal`)
    in ``rehearse_root`` (default: a temporary folder, removed afterwards); executed notebooks,
    figures and tables go to ``<build>/rehearsal/``, never to ``figures/``; with ``ddp`` one
    training also runs under ``torchrun --nproc_per_node 2`` (gloo)."""
    if scale not in SCALES:
        raise RunnerError(f"scale must be one of {SCALES}, got {scale!r}")
    if rehearse and (scale != "paper" or dry_run):
        raise RunnerError("--rehearse rehearses the paper scale: use it with --scale paper and without --dry-run")
    if not (isinstance(jobs, int) and jobs >= 1):
        raise RunnerError(f"jobs must be a whole number >= 1 (notebooks run at once), got {jobs!r}")
    root = repo_root()
    notebooks_dir = Path(notebooks_dir or root / "notebooks").resolve()
    build = Path(build_dir or root / "build").resolve() / ("rehearsal" if rehearse else scale)
    # A rehearsal never writes into figures/: its outputs are stamped, and live beside its notebooks.
    figures = (build / "figures") if rehearse else Path(figures_dir or figures_root()).resolve()
    if rehearse and _rehearsal is None:
        return _rehearse(stems, notebooks_dir, build_dir, log, rehearse_root, ddp)
    env_extra = _rehearsal["env"] if _rehearsal is not None else None
    rehearsal_changes = _rehearsal["changes"] if _rehearsal is not None else None
    params_all = load_params(scale, notebooks_dir / "params")
    stray = sorted(set(params_all) - set(NOTEBOOKS) - {p.stem for p in notebooks_dir.glob("*.ipynb")})
    if stray:
        raise RunnerError(f"{notebooks_dir / 'params' / (scale + '.yaml')} names unknown notebook(s) "
                          f"{', '.join(stray)}")
    env = _kernel_env(scale, figures)
    env.update(env_extra or {})
    outcomes: dict[str, Outcome] = {}
    heads = {stem: f"[{i}/{len(stems)}] {stem:<32}" for i, stem in enumerate(stems, 1)}
    todo = []  # (stem, src, dst, parameters to inject)
    for stem in stems:
        head = heads[stem]
        src = notebooks_dir / f"{stem}.ipynb"
        if not src.exists():
            paper = NOTEBOOKS.get(stem, ("?", ""))
            msg = f"not written yet (paper {paper[0]}: {paper[1]})"
            outcomes[stem] = Outcome(stem, "missing", message=msg)
            log(f"{head} MISSING  {msg}")
            continue
        given = dict(params_all.get(stem, {}))
        requires = given.pop("requires", [])
        if rehearsal_changes is not None:  # stand-in sizes for image counts (ppml.rehearsal)
            from ppml import rehearsal

            declared0 = declared_parameters(src)
            extra = {}
            if "checkpoint_dir" in declared0:  # a fresh folder: never resume a paper run's checkpoints
                import shutil

                ck = build / "checkpoints" / stem
                shutil.rmtree(ck, ignore_errors=True)
                extra["checkpoint_dir"] = str(ck)
            given, rehearsal_changes[stem] = rehearsal.rehearsal_params(stem, given, extra, declared0)
            for k, (a, b) in rehearsal_changes[stem].items():
                log(f"      rehearsal: {k} = {b!r} (paper: {a!r})")
        dst = build / f"{stem}.ipynb"
        build.mkdir(parents=True, exist_ok=True)
        dst.unlink(missing_ok=True)  # never mistake an old run's notebook for this one's
        t0 = time.time()
        try:
            declared = declared_parameters(src)
            check_parameters(stem, declared, given)
            inject = {**given, "scale": scale}
            if dry_run:
                _execute(src, dst, inject, notebooks_dir, env, prepare_only=True)
                missing = []
                for req in requirements_for({**declared, **inject}, requires):
                    ok, how = check_requirement(req)
                    if not ok:
                        missing.append(f"{req}: {how}")
                status = "blocked" if missing else "prepared"
                outcomes[stem] = Outcome(stem, status, time.time() - t0, dst, "\n".join(missing))
                log(f"{head} {'NEEDS' if missing else 'ready'}  → {_rel(dst)}")
                for m in missing:
                    log(f"      missing {m}")
            else:
                todo.append((stem, src, dst, inject))
        except RunnerError as e:
            outcomes[stem] = Outcome(stem, "failed", time.time() - t0, None, str(e))
            log(f"{head} FAILED  {e}")

    def finish(stem: str, dst: Path, t0: float, error: str | None) -> None:
        head = heads[stem]
        try:
            if error is not None:
                raise _NotebookFailed(error)
            note = finish_notebook(dst, figures / stem, since=t0)
            if rehearsal_changes is not None:
                res = json.loads((figures / stem / "results.json").read_text()) \
                    if (figures / stem / "results.json").exists() else {}
                if res.get("rehearsal") is not True:
                    raise RunnerError(f"{stem}: results.json is not stamped as a rehearsal")
                bad = res.get("rehearsal_failed_checks", [])
                _stamp_notebook(dst, rehearsal_changes.get(stem, {}), bad)
                note = "; ".join(filter(None, [note, f"{len(bad)} check(s) not holding on stand-in data"
                                               if bad else ""]))
            out = Outcome(stem, "ok", time.time() - t0, dst, note)
            log(f"{head} ok     {out.seconds:8.1f} s  → {_rel(dst)}" + (f"  ({note})" if note else ""))
        except RunnerError as e:
            out = Outcome(stem, "failed", time.time() - t0, None, str(e))
            log(f"{head} FAILED  {e}")
        except Exception as e:  # the notebook's own error, or one while finishing it
            reason = str(e) if isinstance(e, _NotebookFailed) else f"{type(e).__name__}: {e}"
            out = Outcome(stem, "failed", time.time() - t0, dst if dst.exists() else None, reason)
            kept = f"; error notebook kept at {_rel(dst)}" if dst.exists() else ""
            log(f"{head} FAILED {out.seconds:8.1f} s  {reason}{kept}")
        outcomes[stem] = out

    together = [t for t in todo if t[0] not in RUN_ALONE] if jobs > 1 else []
    if len(together) > 1:
        import concurrent.futures as cf
        import multiprocessing as mp

        env_pool = dict(env)
        if "OMP_NUM_THREADS" not in os.environ:
            env_pool["OMP_NUM_THREADS"] = str(max(1, cpu_cores() // min(jobs, len(together))))
        log(f"running {min(jobs, len(together))} notebooks at a time, {env_pool['OMP_NUM_THREADS']} thread(s) each"
            + (f"; then {', '.join(t[0] for t in todo if t[0] in RUN_ALONE)} alone" if len(together) < len(todo) else ""))
        t_pool = time.time()
        with cf.ProcessPoolExecutor(max_workers=min(jobs, len(together)), mp_context=mp.get_context("spawn")) as pool:
            running = {pool.submit(_execute_job, src, dst, inject, notebooks_dir, env_pool): (stem, dst)
                       for stem, src, dst, inject in together}
            for fut in cf.as_completed(running):
                stem, dst = running[fut]
                try:
                    t0, error = fut.result()
                except Exception as e:  # the worker process itself died (killed, out of memory)
                    t0, error = t_pool, f"{type(e).__name__}: {e}"
                finish(stem, dst, t0, error)
    else:
        together = []
    for stem, src, dst, inject in todo:
        if all(stem != t[0] for t in together):
            finish(stem, dst, *_execute_job(src, dst, inject, notebooks_dir, env))
    if not dry_run:
        write_index(figures, stems)
        try:
            html = write_html_report(build, figures, [outcomes[s] for s in stems if outcomes[s].status == "ok"])
            log(f"report: {_rel(html)}")
        except Exception as e:  # the report is a convenience: never lose the run over it
            log(f"report: not written ({type(e).__name__}: {e})")
    return [outcomes[s] for s in stems]


class _NotebookFailed(Exception):
    """A notebook's execution error (papermill's ``EName: value``), carried to :func:`run`'s log."""


def _stamp_notebook(path: Path, changes: Mapping[str, Any], failed_checks: Sequence[str]) -> None:
    """Open an executed rehearsal notebook with a banner: not results, what was changed."""
    import nbformat

    from ppml.rehearsal import STAMP

    nb = nbformat.read(str(path), as_version=4)
    text = [f"# ⚠ {STAMP.upper()}",
            "This notebook ran the **paper-scale code path** (`python -m ppml.reproduce --scale paper --rehearse`) on "
            "tiny stand-in data in the real file formats, with randomly initialised weights and a few optimisation "
            "steps per training. Every number, table and figure below is meaningless; the run only shows that the "
            "paper path does not crash."]
    if changes:
        text.append("Parameters changed for the rehearsal (image counts scaled to the stand-ins, loop counts, a fresh "
                    "checkpoint folder): " + ", ".join(
            f"`{k}` {b!r} (paper {a!r})" for k, (a, b) in changes.items()) + ".")
    if failed_checks:
        text.append(f"{len(failed_checks)} check(s) did not hold on stand-in data (recorded, not raised).")
    cell = nbformat.v4.new_markdown_cell("\n\n".join(text))
    cell.metadata["tags"] = ["ppml-rehearsal"]
    nb.cells.insert(0, cell)
    atomic_write_text(path, nbformat.writes(nb))


def _rehearse(stems: Sequence[str], notebooks_dir: Path, build_dir: Path | None, log: Callable[[str], None],
              rehearse_root: Path | None, ddp: bool) -> list[Outcome]:
    """Set up the stand-in root and environment, run the notebooks, then the DDP training."""
    import shutil
    import subprocess
    import tempfile

    from ppml import rehearsal

    tmp = None if rehearse_root else Path(tempfile.mkdtemp(prefix="ppml-rehearsal-"))
    t0 = time.time()
    root = rehearsal.prepare(rehearse_root or tmp)
    env = rehearsal.rehearsal_env(root)
    log(f"rehearsal: {rehearsal.STAMP}; stand-in data and random weights in {root} "
        f"({time.time() - t0:.0f} s); {env['PPML_REHEARSE_STEPS']} step(s) per epoch, "
        f"≤ {env['PPML_REHEARSE_EPOCHS']} epoch(s), batch ≤ {env['PPML_REHEARSE_BATCH']}, "
        f"{'bf16 autocast' if env['PPML_CPU_AMP'].strip().lower() == 'bf16' else 'float32 (no autocast)'} on the CPU")
    try:
        outcomes = run(stems, scale="paper", notebooks_dir=notebooks_dir, build_dir=build_dir, log=log,
                       rehearse=True, _rehearsal={"env": env, "changes": {}})
        if ddp:
            out = Path(build_dir or repo_root() / "build").resolve() / "rehearsal" / "ddp"
            shutil.rmtree(out, ignore_errors=True)
            out.mkdir(parents=True)
            t1 = time.time()
            cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone",
                   "-m", "ppml.rehearsal", "ddp", str(out)]
            p = subprocess.run(cmd, env={**_kernel_env("paper", out), **env, "OMP_NUM_THREADS": "1"},
                               cwd=str(repo_root()), capture_output=True, text=True, timeout=1800)
            ranks = sorted(out.glob("ddp_rank*.pt"))
            ok = p.returncode == 0 and len(ranks) == 2
            head = f"[ddp] {'torchrun x2 (gloo): 02 ResNet-18':<32}"
            if ok:
                log(f"{head} ok     {time.time() - t1:8.1f} s  → {_rel(out)}")
                outcomes.append(Outcome("ddp", "ok", time.time() - t1, out))
            else:
                tail = (p.stdout + p.stderr).strip().splitlines()[-15:]
                log(f"{head} FAILED {time.time() - t1:8.1f} s  (exit {p.returncode})\n      " + "\n      ".join(tail))
                outcomes.append(Outcome("ddp", "failed", time.time() - t1, None, "\n".join(tail)))
        return outcomes
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


# --------------------------------------------------------------------------- CLI
def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ppml.reproduce", description=__doc__.split("\n\n")[0])
    p.add_argument("notebooks", nargs="*", metavar="NOTEBOOK",
                   help="stems, numbers (03) or paths; default: all five")
    p.add_argument("--scale", choices=SCALES, default="smoke",
                   help="smoke (default: CPU, offline, minutes), cpu (full Fashion-MNIST, ~30 CPU-minutes per "
                        "notebook, only the notebooks notebooks/params/cpu.yaml names) or paper (the papers' data "
                        "and epochs; GPU)")
    p.add_argument("--dry-run", action="store_true",
                   help="prepare each notebook without executing it; list missing data sets and weights")
    p.add_argument("--rehearse", action="store_true",
                   help="with --scale paper: run the paper path on tiny stand-in data with random weights and a "
                        "few steps per training (no GPU, no download) into build/rehearsal/ — finds crashes, not results")
    p.add_argument("--rehearse-root", type=Path, default=None,
                   help="folder for the rehearsal's stand-in data and weights (kept and reused; default: a temporary one)")
    p.add_argument("--no-ddp", dest="ddp", action="store_false",
                   help="rehearsal: skip the torchrun --nproc_per_node 2 training")
    p.add_argument("--jobs", "-j", type=int, default=None, metavar="N",
                   help="notebooks run at once, each on cores/N threads (default: one per core at smoke and cpu "
                        "scale, 1 at paper scale); 06_benchmark always runs alone")
    p.add_argument("--list", action="store_true", help="list the notebooks and exit")
    p.add_argument("--notebooks-dir", type=Path, default=None, help=argparse.SUPPRESS)
    p.add_argument("--build-dir", type=Path, default=None, help="where executed notebooks go (build/)")
    p.add_argument("--figures-dir", type=Path, default=None, help="where figures go (figures/)")
    a = p.parse_args(argv)
    notebooks_dir = (a.notebooks_dir or repo_root() / "notebooks").resolve()
    try:
        stems = resolve(a.notebooks, notebooks_dir)
        if a.scale == "cpu":
            left = stems
            stems = cpu_scale_stems(stems, notebooks_dir, explicit=bool(a.notebooks))
            if len(stems) < len(left):
                print(f"cpu scale: {', '.join(s for s in left if s not in stems)} not run (no entry in "
                      "notebooks/params/cpu.yaml: their smoke run shows their effects)", flush=True)
        if a.list:
            for s in stems:
                state = "present" if (notebooks_dir / f"{s}.ipynb").exists() else "not written yet"
                print(f"{s:<34} paper {NOTEBOOKS.get(s, ('–',))[0]:>3}  {state}")
            return 0
        print(f"ppml.reproduce: {len(stems)} notebook(s) at scale '{a.scale}'"
              f"{' (dry run)' if a.dry_run else ''}{' (REHEARSAL: stand-in data, not results)' if a.rehearse else ''}",
              flush=True)
        t0 = time.time()
        jobs = default_jobs(a.scale, len(stems)) if a.jobs is None else a.jobs
        outcomes = run(stems, scale=a.scale, dry_run=a.dry_run, notebooks_dir=notebooks_dir,
                       build_dir=a.build_dir, figures_dir=a.figures_dir,
                       log=lambda s: print(s, flush=True), rehearse=a.rehearse,
                       rehearse_root=a.rehearse_root, ddp=a.ddp, jobs=jobs)
    except RunnerError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    bad = [o for o in outcomes if o.status not in ("ok", "prepared")]
    summary = ", ".join(f"{sum(o.status == s for o in outcomes)} {s}"
                        for s in ("ok", "prepared", "blocked", "failed", "missing")
                        if any(o.status == s for o in outcomes))
    print(f"done in {time.time() - t0:.1f} s: {summary}", flush=True)
    if a.rehearse:
        print(f"index: {_rel(Path(a.build_dir or repo_root() / 'build').resolve() / 'rehearsal' / 'figures' / 'index.md')}")
    elif not a.dry_run:
        print(f"index: {_rel(Path(a.figures_dir or figures_root()).resolve() / 'index.md')}")
    return 1 if bad else 0


if __name__ == "__main__":
    # Run the imported module's main, not this __main__ copy: modules that load weights
    # (ppml.pretrained) register them with ``ppml.reproduce``, a registry this copy does not share.
    from ppml.reproduce import main as _main

    sys.exit(_main())
