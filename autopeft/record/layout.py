"""The run directory: where a search keeps its embedded stores and trained adapters."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class RunLayout:
    """``study.db`` (Optuna), ``mlflow.db`` and ``mlartifacts/`` (MLflow), ``trials/NNNN/adapter``
    and ``baselines/NAME/adapter`` (each trained adapter, as the worker saved it)."""

    root: Path

    @property
    def study_db(self) -> Path:
        return self.root / "study.db"

    @property
    def mlflow_db(self) -> Path:
        return self.root / "mlflow.db"

    @property
    def artifacts(self) -> Path:
        return self.root / "mlartifacts"

    @property
    def optuna_storage(self) -> str:
        return f"sqlite:///{self.study_db.resolve()}"

    @property
    def mlflow_uri(self) -> str:
        return f"sqlite:///{self.mlflow_db.resolve()}"

    def trial_adapter(self, number: int) -> Path:
        return self.root / "trials" / f"{number:04d}" / "adapter"

    def final_adapter(self, target: str, seed: int) -> Path:
        """The adapter of a re-evaluation: ``target`` is ``trial:N`` or ``baseline:NAME``."""
        return self.root / "final" / target.replace(":", "-") / f"seed-{seed}" / "adapter"

    def checkpoint(self, number: int, rung: int) -> Path:
        """Where a trial of a search with rungs waits after ``rung``: what its next rung continues from."""
        return self.root / "checkpoints" / f"{number:04d}-rung-{rung}.pt"

    def baseline_adapter(self, name: str) -> Path:
        return self.root / "baselines" / name / "adapter"
