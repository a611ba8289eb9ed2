"""The sweep runner, on Optuna: one study per sweep, one trial per point, in an RDB storage.

    storage   sqlite:///<out>/<sweep>/sweep.db by default; a PostgreSQL or MySQL URL shares one sweep
              between machines. Every worker, on any machine, runs the same loop against it.
    study     named after the sweep and a digest of its points, so an edited spec starts a new study (the
              run directories of unchanged points are still found and reused).
    trial     Optuna's ``study.optimize(n_trials=1)`` runs one trial: it asks the sampler for a point, records a
              heartbeat while the objective trains it, and stores the outcome (COMPLETE with the test metric,
              top-1 or mIoU, as the value and the run's summary as a user attribute, or FAIL).
    sampler   :class:`PointSampler` hands a new trial a point that is neither done nor being run by a live
              trial. Optuna's GridSampler is not used: it counts a failed or interrupted point as visited for
              good, so an interrupted run would never be resumed, and it hands out duplicates by design.
    claim     before training, the trial claims its point in :class:`~convmixer.experiments.claims.ClaimTable`
              (an atomic INSERT); a worker that loses the claim leaves the point and marks its trial PRUNED.
    heartbeat a worker that dies leaves its trial RUNNING; Optuna's heartbeat (``heartbeat_interval``,
              ``grace_period`` of :class:`optuna.storages.RDBStorage`) marks it FAIL once it goes quiet, and
              the point is offered again: the next worker resumes it from its last.pt.

Each point trains with :class:`~convmixer.training.engine.Trainer` in <out>/<sweep>/<point id>: a run directory
with summary.json is finished (skipped), one with last.pt and no summary.json is resumed, exactly.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import traceback
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from ..errors import ConfigError, ConvMixerError, first_line
from ..training.rundir import write_json
from .claims import ClaimTable, engine_kwargs
from .costs import duration
from .report import sweep_metric
from .spec import Point, SweepSpec

DONE = ("trained", "found")  # trial statuses that mean the point has its result
MAX_STALE = 3  # a point whose worker died this often in one session is left for the next invocation
POINT_FILE = "sweep_point.json"  # written into each run directory: which point of which sweep it is


class SweepInterrupted(Exception):
    """SIGINT/SIGTERM stopped a run; it saved its last.pt and this worker stops."""

    def __init__(self, signal_name: str) -> None:
        super().__init__(f"interrupted by {signal_name}")
        self.signal_name = signal_name


class PointFailed(Exception):
    """A point's training raised; the trial is marked FAIL and the sweep goes on with the other points."""


@dataclass
class PointState:
    done: bool = False  # a completed trial holds its result (or its run directory has summary.json)
    live: bool = False  # a running trial has it
    blocked: bool = False  # failed during this worker's session: left for the next invocation
    summary: dict[str, Any] | None = None
    error: str | None = None  # the last error message, if it failed


@dataclass
class WorkResult:
    trained: list[str] = field(default_factory=list)
    found: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    interrupted: str | None = None  # the signal's name when a run was interrupted


def default_storage(sweep_dir: Path) -> str:
    return f"sqlite:///{Path(sweep_dir).resolve() / 'sweep.db'}"


def study_name(spec: SweepSpec, points: list[Point], quick: bool) -> str:
    digest = hashlib.sha256(json.dumps([[p.id, p.fingerprint] for p in points]).encode()).hexdigest()[:10]
    return f"{spec.run_name(quick)}-{digest}"


# ----------------------------------------------------------------------------------------------------------------
# Run directories
# ----------------------------------------------------------------------------------------------------------------
def local_state(point: Point, sweep_dir: Path) -> str:
    """"done" (summary.json), "partial" (last.pt, no summary.json) or "new"; a run directory that holds another
    configuration's run raises :class:`ConfigError`."""
    run_dir = Path(sweep_dir) / point.id
    has_summary, has_last = (run_dir / "summary.json").is_file(), (run_dir / "last.pt").is_file()
    if not (has_summary or has_last):
        return "new"
    marker = run_dir / POINT_FILE
    try:
        saved = json.loads(marker.read_text())
    except (OSError, ValueError):
        raise ConfigError(f"{run_dir} holds a run that this sweep did not make (no readable {POINT_FILE}); move it "
                          f"away or choose another --out") from None
    if saved.get("fingerprint") != point.fingerprint:
        raise ConfigError(f"{run_dir} was trained with other settings than point {point.id} of this spec "
                          f"({_first_difference(saved.get('config', {}), point.cfg.to_dict())}); delete it, "
                          f"or choose another --out")
    return "done" if has_summary else "partial"


def check_run_dirs(points: list[Point], sweep_dir: Path) -> dict[str, str]:
    """Every point's :func:`local_state`, so a mismatched run directory fails before anything runs."""
    return {p.id: local_state(p, sweep_dir) for p in points}


def read_summary(point: Point, sweep_dir: Path) -> dict[str, Any] | None:
    path = Path(sweep_dir) / point.id / "summary.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _write_marker(point: Point, sweep_dir: Path, sweep: str) -> None:
    run_dir = Path(sweep_dir) / point.id
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json(run_dir / POINT_FILE, {"sweep": sweep, "point": point.id, "setting": point.setting, "arm": point.arm,
                                      "values": point.values, "seed": point.seed, "fingerprint": point.fingerprint,
                                      "config": point.cfg.to_dict()})


def _first_difference(old: dict, new: dict, prefix: str = "") -> str:
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            found = _first_difference(a, b, f"{prefix}{key}.")
            if found:
                return found
        elif a != b and f"{prefix}{key}" not in ("run.out_dir", "run.name", "run.device", "run.progress",
                                                  "run.tensorboard", "run.checkpoint_minutes"):
            return f"{prefix}{key}: {a!r} there, {b!r} now"
    return "its recorded settings differ" if not prefix else ""


# ----------------------------------------------------------------------------------------------------------------
# Optuna
# ----------------------------------------------------------------------------------------------------------------
def _optuna():
    try:
        import optuna
    except ImportError:
        raise ConfigError("sweeps need Optuna: pip install 'convmixer[sweep]' (or pip install optuna)") from None
    return optuna


@functools.lru_cache(maxsize=None)
def point_sampler_class() -> type:
    """:class:`optuna.samplers.BaseSampler` subclass handing out sweep points (built on first use, so that importing
    this module does not import Optuna)."""
    base = _optuna().samplers.BaseSampler

    class PointSampler(base):
        """One categorical parameter, ``point``: each new trial gets the point that ``choose(study)`` returns
        when the trial starts (None: nothing to do; the objective then prunes the trial)."""

        def __init__(self, choose: Callable[[Any], str | None]) -> None:
            self._choose = choose
            self._assigned: dict[int, str | None] = {}

        def assigned(self, number: int) -> str | None:
            return self._assigned.get(number)

        def infer_relative_search_space(self, study, trial) -> dict:
            return {}

        def sample_relative(self, study, trial, search_space) -> dict:
            return {}

        def before_trial(self, study, trial) -> None:
            self._assigned[trial.number] = self._choose(study)

        def sample_independent(self, study, trial, param_name, param_distribution) -> Any:
            if param_name != "point":
                raise ValueError(f"a sweep trial has one parameter, point; got {param_name!r}")
            point = self._assigned.get(trial.number)
            return point if point is not None else param_distribution.choices[0]

        def after_trial(self, study, trial, state, values) -> None:
            self._assigned.pop(trial.number, None)

    return PointSampler


class Sweep:
    """One worker's view of a sweep: the study, the claims, and the loop that trains points until none is left."""

    def __init__(self, spec: SweepSpec, points: list[Point], sweep_dir: Path, *, storage: str | None = None,
                 quick: bool = False, heartbeat: int = 30, grace: int | None = None,
                 log: Callable[[str], None] = print) -> None:
        self.spec, self.points, self.sweep_dir = spec, points, Path(sweep_dir)
        self.by_id = {p.id: p for p in points}
        self.ids = [p.id for p in points]
        self.storage_url = storage or default_storage(self.sweep_dir)
        self.study_name = study_name(spec, points, quick)
        self.heartbeat, self.grace = heartbeat, grace if grace is not None else 6 * heartbeat
        self.log = log
        self.started = datetime.now()
        self.owner = f"{socket.gethostname()}:{os.getpid()}"
        self.study = None
        self.storage = None  # optuna's RDBStorage
        self.claims: ClaimTable | None = None
        self.sampler = None
        self.lost: dict[str, float] = {}  # points whose claim this worker lost, and when
        self.result = WorkResult()

    # ------------------------------------------------------------------------------------------------------------
    def open(self, attempts: int = 5):
        """Create or load the study and the claims table (several workers may start at once: retry races)."""
        optuna = _optuna()
        from sqlalchemy import exc as sa_exc

        optuna.logging.set_verbosity(optuna.logging.ERROR)  # this module reports points itself
        if self.storage_url.startswith("sqlite:///"):
            Path(self.storage_url[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
        self.sampler = point_sampler_class()(self._choose)
        for attempt in range(attempts):
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # the heartbeat arguments
                    storage = optuna.storages.RDBStorage(
                        self.storage_url, engine_kwargs=engine_kwargs(self.storage_url),
                        heartbeat_interval=self.heartbeat, grace_period=self.grace)
                self.study = optuna.create_study(study_name=self.study_name, storage=storage, sampler=self.sampler,
                                                 direction="maximize", load_if_exists=True)
                self.storage = storage
                # the study's id too: a study deleted and made again under its name does not inherit old claims
                self.claims = ClaimTable(self.storage_url, f"{self.study_name}#{getattr(self.study, '_study_id', '')}")
                break
            except Exception as e:  # noqa: BLE001
                # first-time table and study creation can race between processes: retry those; fail on the rest
                # (a bad URL, a missing database driver) at once
                race = (sa_exc.OperationalError, sa_exc.IntegrityError, sa_exc.ProgrammingError,
                        optuna.exceptions.StorageInternalError, optuna.exceptions.DuplicatedStudyError)
                if attempt == attempts - 1 or not isinstance(e, race):
                    raise ConfigError(f"cannot open the sweep storage {self.safe_url}: "
                                      f"{first_line(e)}") from None
                time.sleep(0.5 + attempt)
        self.study.set_user_attr("points", len(self.points))
        self.study.set_user_attr("sweep", self.spec.name)
        return self.study

    @property
    def safe_url(self) -> str:
        """The storage URL without its password, for messages."""
        url = self.storage_url
        if "@" in url and "://" in url:
            scheme, rest = url.split("://", 1)
            creds, host = rest.rsplit("@", 1)
            return f"{scheme}://{creds.split(':', 1)[0]}:***@{host}"
        return url

    def close(self) -> None:
        if self.claims is not None:
            self.claims.close()

    def stored_summaries(self) -> dict[str, dict[str, Any]]:
        """point id -> summary of the points the storage records as finished; creates nothing (for --report-only)."""
        if self.storage_url.startswith("sqlite:///") and not Path(self.storage_url[len("sqlite:///"):]).is_file():
            return {}
        optuna = _optuna()
        optuna.logging.set_verbosity(optuna.logging.ERROR)
        try:
            storage = optuna.storages.RDBStorage(self.storage_url, engine_kwargs=engine_kwargs(self.storage_url))
            study = optuna.load_study(study_name=self.study_name, storage=storage)
        except KeyError:  # no study of this name: nothing recorded yet
            return {}
        out = {}
        for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
            pid = t.user_attrs.get("point_id")
            if pid in self.by_id and t.user_attrs.get("status") in DONE and t.user_attrs.get("summary") \
                    and t.user_attrs.get("fingerprint") == self.by_id[pid].fingerprint:
                out[pid] = t.user_attrs["summary"]
        return out

    # ------------------------------------------------------------------------------------------------------------
    def states(self) -> dict[str, PointState]:
        """Every point's state, from the study's trials and the run directories."""
        from optuna.trial import TrialState

        states = {pid: PointState() for pid in self.ids}
        stale: dict[str, int] = {}
        for t in self.study.get_trials(deepcopy=False):
            pid = t.params.get("point") or t.user_attrs.get("point_id")
            if pid not in states:
                continue
            s, status = states[pid], t.user_attrs.get("status")
            recent = t.datetime_complete is not None and t.datetime_complete >= self.started
            if t.state == TrialState.COMPLETE and status in DONE:
                s.done, s.summary = True, t.user_attrs.get("summary")
            elif t.state in (TrialState.RUNNING, TrialState.WAITING):
                s.live = True
            elif t.state == TrialState.FAIL and status == "error":
                s.error = t.user_attrs.get("error")
                s.blocked = s.blocked or recent
            elif t.state == TrialState.FAIL and status != "interrupted":  # its worker died (heartbeat)
                stale[pid] = stale.get(pid, 0) + 1
                s.error = "its worker stopped sending heartbeats"
                s.blocked = s.blocked or (recent and stale[pid] >= MAX_STALE)
        for pid, s in states.items():
            if not s.done and (self.sweep_dir / pid / "summary.json").is_file():
                s.done, s.summary = True, read_summary(self.by_id[pid], self.sweep_dir)
        return states

    def _candidates(self, states: dict[str, PointState]) -> list[str]:
        """Points to offer, in the spec's order: not done, not run by a live trial, not failed this session, and
        not a point whose claim this worker lost in the last few seconds (its holder may still be starting)."""
        cooldown = time.monotonic() - max(5.0, float(self.heartbeat))
        return [pid for pid in self.ids if not (states[pid].done or states[pid].live or states[pid].blocked)
                and self.lost.get(pid, -1e9) < cooldown]

    def _choose(self, study) -> str | None:
        candidates = self._candidates(self.states())
        return candidates[0] if candidates else None

    def _holder_gave_up(self, number: int) -> bool:
        """Whether the trial holding a claim has finished without a result (failed, interrupted, worker dead)."""
        from optuna.trial import TrialState

        trials = self.study.get_trials(deepcopy=False)
        holder = next((t for t in trials if t.number == number), None)
        return holder is None or holder.state in (TrialState.FAIL, TrialState.PRUNED)

    # ------------------------------------------------------------------------------------------------------------
    def work(self, on_progress: Callable[[dict[str, PointState]], None] | None = None,
             poll: float | None = None) -> WorkResult:
        """Train points until every one is done or has failed in this session.

        While other workers still run the last points this worker waits, so that it can take over a point
        whose worker dies; it polls every ``poll`` seconds (default: the heartbeat interval).
        """
        optuna = _optuna()
        if self.study is None:
            self.open()
        poll = poll if poll is not None else max(1.0, float(self.heartbeat))
        while True:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                optuna.storages.fail_stale_trials(self.study)
            states = self.states()
            if on_progress is not None:
                on_progress(states)
            if not any(not (s.done or s.blocked) for s in states.values()):
                break  # every point is done or failed in this session
            if self._candidates(states):
                try:
                    self.study.optimize(self._objective, n_trials=1, catch=(PointFailed,))
                except SweepInterrupted as e:
                    self.result.interrupted = e.signal_name
                    break
            else:  # the rest is running elsewhere: wait, to take over any point whose worker dies
                time.sleep(poll)
        if on_progress is not None:
            on_progress(self.states())
        return self.result

    def _objective(self, trial) -> float:
        from optuna import TrialPruned

        pid = self.sampler.assigned(trial.number)
        if pid is None:
            trial.set_user_attr("status", "idle")
            raise TrialPruned("no point left to run")
        # Optuna's heartbeat thread writes its first beat asynchronously, and a RUNNING trial without any beat is
        # never declared stale: beat once before the trial names its point, so that a worker killed from here on
        # always leaves a trial that goes stale and is taken over.
        self.storage.record_heartbeat(trial._trial_id)
        trial.suggest_categorical("point", self.ids)
        point = self.by_id[pid]
        for key, value in (("point_id", pid), ("fingerprint", point.fingerprint), ("owner", self.owner)):
            trial.set_user_attr(key, value)
        if not self.claims.claim(pid, trial.number, self._holder_gave_up):
            self.lost[pid] = time.monotonic()
            trial.set_user_attr("status", "duplicate")
            raise TrialPruned(f"{pid} is claimed by another worker")
        trial.set_user_attr("status", "running")  # a FAIL with this status: the worker died
        run_dir = self.sweep_dir / pid
        trial.set_user_attr("run_dir", str(run_dir))
        try:
            status, summary = self._train(point)
        except SweepInterrupted:
            trial.set_user_attr("status", "interrupted")
            self.log(f"{pid}: interrupted; its last.pt is saved and the next `convmixer sweep` resumes it")
            raise
        except Exception as e:  # noqa: BLE001  a failed run is recorded; the sweep goes on
            message = first_line(e)
            if not isinstance(e, ConvMixerError):
                traceback.print_exc()
                message = f"{type(e).__name__}: {message}"
            trial.set_user_attr("status", "error")
            trial.set_user_attr("error", message[:500])
            self.result.failed[pid] = message
            self.log(f"{pid}: FAILED: {message}")
            raise PointFailed(message) from e
        metric = sweep_metric(point.cfg)
        score = summary.get(metric.key)
        if score is None:
            raise PointFailed(f"{pid}: the run finished without a test {metric.label} in {run_dir / 'summary.json'}")
        trial.set_user_attr("summary", summary)
        trial.set_user_attr("status", status)
        (self.result.trained if status == "trained" else self.result.found).append(pid)
        if status == "trained":
            self.log(f"{pid}: test {metric.label} {score:.2f}% (training {duration(summary.get('wall_time_s'))}) "
                     f"-> {run_dir}")
        return float(score)

    def _train(self, point: Point) -> tuple[str, dict[str, Any]]:
        from ..training.engine import Trainer

        state = local_state(point, self.sweep_dir)
        if state == "done":
            summary = read_summary(point, self.sweep_dir)
            if summary is not None:
                return "found", summary
        run_dir = self.sweep_dir / point.id
        if state == "partial":
            self.log(f"{point.id}: resuming from {run_dir / 'last.pt'}")
            trainer = Trainer.resume(run_dir)
        else:
            self.log(f"{point.id}: training")
            _write_marker(point, self.sweep_dir, self.spec.name)
            trainer = Trainer(point.cfg)
        result = trainer.fit()
        if result.stopped_by:
            raise SweepInterrupted(result.stopped_by)
        return "trained", result.summary


# ----------------------------------------------------------------------------------------------------------------
# Several worker processes on this machine
# ----------------------------------------------------------------------------------------------------------------
def spawn_workers(argv: list[str], n: int, log_dir: Path, threads: int | None,
                  devices: list[str | None]) -> list[tuple[subprocess.Popen, Path]]:
    """Start ``n`` processes of ``python -m convmixer <argv> --worker``, each logging to log_dir/worker-<i>.log."""
    log_dir.mkdir(parents=True, exist_ok=True)
    procs = []
    for i in range(n):
        env = dict(os.environ)
        cmd = [sys.executable, "-m", "convmixer", *argv, "--worker"]
        if threads is not None:
            env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
            cmd += ["--threads", str(threads)]
        if devices[i % len(devices)] is not None:
            cmd += ["--device", devices[i % len(devices)]]
        log = log_dir / f"worker-{i}.log"
        with open(log, "ab") as f:
            procs.append((subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env), log))
    return procs


def wait_workers(procs: list[tuple[subprocess.Popen, Path]], tick: Callable[[], None], poll: float = 1.0) -> list[int]:
    """Wait for the workers, calling ``tick`` every ``poll`` seconds. On Ctrl-C or SIGTERM, ask each worker to
    stop (SIGTERM: it finishes its step, saves last.pt and exits) and wait for it."""
    previous = signal.getsignal(signal.SIGTERM)

    def terminate(signum, frame):
        raise KeyboardInterrupt

    try:
        signal.signal(signal.SIGTERM, terminate)
    except ValueError:  # not the main thread
        previous = None
    try:
        while any(p.poll() is None for p, _ in procs):
            tick()
            time.sleep(poll)
    except KeyboardInterrupt:
        for p, _ in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p, _ in procs:
            p.wait()
        raise
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    tick()
    return [p.returncode for p, _ in procs]
