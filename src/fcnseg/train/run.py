"""The run folder: one training run's files, which nothing may lose or mix.

::

    <out>/
      config.json    the run's TrainConfig
      metrics.jsonl  one JSON record a line (losses, evaluations), by iteration
      last.pt        the latest checkpoint: --resume continues from it
      best.pt        the checkpoint with the best validation mean IU
      iter_<N>.pt    with ``keep_checkpoints``: each validation's checkpoint, at iteration N
      .lock          held (flock) by the run writing here

A folder that holds a run is reused only when asked: ``resume`` continues it,
``overwrite`` replaces it. One run at a time writes into a folder (the lock).
Nothing is written until the run has checked its data and built its model
(:meth:`RunFolder.start`), so a run that fails early leaves the folder as it
was. A resumed run must keep the model and data of the run it continues.
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from fcnseg.atomic import atomic_write
from fcnseg.errors import ConfigError, UserError
from fcnseg.train.checkpoint import save_checkpoint
from fcnseg.train.config import TrainConfig, option_name

RUN_FILES = ("config.json", "metrics.jsonl", "last.pt", "best.pt")
LOCK = ".lock"
KEPT = re.compile(r"iter_(\d+)\.pt")
"""The name of a kept checkpoint (``keep_checkpoints``); its group is the iteration."""

RESUMABLE = frozenset(
    {"iterations", "eval_every", "log_every", "workers", "device", "precision",
     "channels_last", "compile", "keep_checkpoints"}
)  # fmt: skip
"""Fields a resumed run may change: how long, how often it reports, where and how
fast it runs. Any other change (model, data, optimisation, seed) would mix two runs."""


class RunError(UserError):
    """A run folder that cannot be used as asked: in use, already a run, nothing to resume."""


class RunFolder:
    """The files of one run in ``path`` (see the module docstring)."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.started = False

    @property
    def last(self) -> Path:
        return self.path / "last.pt"

    @property
    def best(self) -> Path:
        return self.path / "best.pt"

    @property
    def log_path(self) -> Path:
        return self.path / "metrics.jsonl"

    def kept(self, iteration: int) -> Path:
        """Where the checkpoint of ``iteration`` is kept (``keep_checkpoints``)."""
        return self.path / f"iter_{iteration}.pt"

    def kept_iterations(self) -> list[int]:
        """The iterations of the kept checkpoints in the folder, in order."""
        found = (KEPT.fullmatch(p.name) for p in self.path.glob("iter_*.pt"))
        return sorted(int(m.group(1)) for m in found if m)

    def existing(self) -> list[str]:
        """The run files already in the folder."""
        return [name for name in RUN_FILES if (self.path / name).exists()]

    def check(self, *, resume: bool, overwrite: bool) -> None:
        """Refuse a folder that holds a run unless resuming or overwriting it, and
        resuming a folder with no checkpoint. A run stopped before its first
        checkpoint cannot be resumed: the only way on is to start it again."""
        if resume and overwrite:
            raise RunError("--resume continues a run and --overwrite replaces it: give one")
        found = self.existing()
        if found and not overwrite and not (self.last.exists() or self.best.exists()):
            raise RunError(
                f"{self.path} holds a run that stopped before its first checkpoint "
                f"({', '.join(found)}): nothing to resume; --overwrite starts it again"
            )
        if resume and not self.last.is_file():
            raise RunError(f"{self.last}: no checkpoint to resume from; leave out --resume")
        if not resume and not overwrite and found:
            raise RunError(
                f"{self.path} holds a run ({', '.join(found)}): --resume to continue it, "
                "--overwrite to replace it, or another --out"
            )

    @contextmanager
    def lock(self) -> Iterator[RunFolder]:
        """Hold ``<path>/.lock`` (creating the folder) for the ``with`` block.

        A second run into the folder stops with one line naming the holder's pid,
        which the lock file holds while the lock is held (and only then: a run
        that stops before :meth:`start` leaves the folder byte for byte as it was).
        If the folder was created here and the run stopped before :meth:`start`,
        it is removed again.

        Raises:
            RunError: another process holds the lock.
        """
        created = not self.path.exists()
        self.path.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            self._acquire(fd)
            try:
                yield self
            finally:
                os.ftruncate(fd, 0)
                if created and not self.started:
                    (self.path / LOCK).unlink(missing_ok=True)
                    with suppress(OSError):  # not empty after all: leave it
                        self.path.rmdir()
        finally:
            os.close(fd)  # releases the flock

    def _acquire(self, fd: int) -> None:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            raise RunError(
                f"{self.path} is in use by another training run (pid {holder}): "
                "wait for it to end or choose another --out"
            ) from None
        os.ftruncate(fd, 0)  # a killed run's pid may still be there
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)

    def saved_config(self) -> TrainConfig:
        """The run's ``config.json``.

        Raises:
            RunError: the file is missing; ConfigError: it is not a valid config.
        """
        path = self.path / "config.json"
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise RunError(f"{path}: not found; is {self.path} a run folder?") from None
        except ValueError as e:
            raise ConfigError(f"{path}: not valid JSON ({e})") from None
        return TrainConfig.from_dict(data)

    def start(self, cfg: TrainConfig, iteration: int) -> None:
        """Begin writing at ``iteration``: the first write of this run.

        Clears temp files that killed saves left. At iteration 0 the folder's
        previous run (if ``overwrite`` let it through) is removed, its kept
        checkpoints too; a resumed run cuts ``metrics.jsonl`` back to its
        checkpoint's iteration, so that no record appears twice, and drops kept
        checkpoints past it. Then ``config.json`` is (re)written.
        """
        for pattern in [*RUN_FILES, "iter_*.pt"]:
            for tmp in self.path.glob(f".{pattern}.*.tmp"):
                tmp.unlink(missing_ok=True)
        if iteration == 0:
            for name in RUN_FILES:
                (self.path / name).unlink(missing_ok=True)
        else:
            self._cut_log(iteration)
        for kept in self.kept_iterations():
            if kept > iteration:
                self.kept(kept).unlink()
        write_text(self.path / "config.json", cfg.to_json() + "\n")
        self.started = True

    def _cut_log(self, iteration: int) -> None:
        """Keep the records up to ``iteration``; drop later ones and a torn last line."""
        if not self.log_path.exists():
            return
        lines = self.log_path.read_text().splitlines()
        kept = [line for line in lines if 0 <= _record_iteration(line) <= iteration]
        write_text(self.log_path, "".join(line + "\n" for line in kept))

    def log(self, **record) -> None:
        """Append one record to ``metrics.jsonl`` (strict JSON: no NaN)."""
        with self.log_path.open("a") as f:
            f.write(json.dumps(record, allow_nan=False) + "\n")

    def save(self, state: dict, *, best: bool, keep: bool = False) -> None:
        """Write ``last.pt``, and ``best.pt`` if ``best``, and ``iter_<N>.pt`` (N, the
        state's iteration) if ``keep``: each atomically, the state serialised once."""
        copies = []
        if best:
            copies.append(self.best)
        if keep:
            copies.append(self.kept(state["iteration"]))
        save_checkpoint(state, self.last, *copies)


def _record_iteration(line: str) -> int:
    """The iteration of a ``metrics.jsonl`` line; -1 for a torn or foreign line."""
    try:
        record = json.loads(line)
    except ValueError:
        return -1
    value = record.get("iteration") if isinstance(record, dict) else None
    return value if isinstance(value, int) else -1


def write_text(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` atomically."""
    atomic_write(path, lambda f: f.write(text.encode()))


def check_resume(saved: TrainConfig, cfg: TrainConfig, *, at: int, force: bool) -> None:
    """Refuse to continue a run (``saved``, at iteration ``at``) with ``cfg`` if that
    would mix two runs: a changed field outside :data:`RESUMABLE`, unless ``force``.

    Raises:
        ConfigError: naming every such field with its old and new value, or
            ``iterations`` below ``at``.
    """
    if cfg.iterations < at:
        raise ConfigError(
            f"iterations (--iterations) {cfg.iterations}: the run is already at iteration {at}"
        )
    changed = [
        f"{f.name} ({option_name(f.name)}) {getattr(saved, f.name)!r} -> {getattr(cfg, f.name)!r}"
        for f in dataclasses.fields(TrainConfig)
        if f.name not in RESUMABLE and getattr(saved, f.name) != getattr(cfg, f.name)
    ]
    if changed and not force:
        raise ConfigError(
            f"resuming with a changed {'; '.join(changed)} would mix two runs: keep the run's "
            "value, --force to resume anyway, or start a new run in another --out"
        )
