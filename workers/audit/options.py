"""The options of an audit (DESIGN 3.5 ``options``), validated once and stored with the audit."""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from workers.audit.flags import FlagThresholds
from workers.engine.config import VisualizationConfig
from workers.engine.errors import InvalidInput


class AuditOptions(BaseModel):
    """Which pairs to audit and how hard to look. Limits bound the work one request can ask for."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    top_k: int = Field(10, ge=1, le=100)
    min_support: int = Field(1, ge=1)
    min_rate: float = Field(0.0, ge=0, le=1)
    pairs: list[tuple[str, str]] = Field(default_factory=list, max_length=100)
    levels: int = Field(3, ge=1, le=8)
    seeds: int = Field(3, ge=1, le=16)
    steps: int = Field(128, ge=1, le=4096)
    visualization: VisualizationConfig = VisualizationConfig()
    thresholds: FlagThresholds = FlagThresholds()
    # ask the model directly with factor probes (STATIC_FACTOR_CUE / MOTION_FACTOR_CUE, LOCALIZED_CUE from the local
    # probes): about 9.5x the cost of visualising a pair, once per audit on a model of up to 12 classes and per pair
    # on larger ones (tests/benchmarks/scoring_cost.py), so off unless asked for
    factor_probes: bool = False

    @field_validator("pairs", mode="before")
    @classmethod
    def _pairs_from_text(cls, value):
        if isinstance(value, str):
            from workers.audit.ranking import parse_pairs_option

            return parse_pairs_option(value)
        return value

    def engine_config(self) -> VisualizationConfig:
        """The visualisation config with this audit's step count and kappa levels."""
        return self.visualization.model_copy(update={"steps": self.steps,
                                                     "kappa_levels": self.visualization.kappas(self.levels)})


def parse_audit_options(raw: dict) -> AuditOptions:
    """``AuditOptions`` from user input (API body, CLI flags); the first problem becomes an ``InvalidInput`` whose
    field is ``options.<name>``."""
    try:
        return AuditOptions.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first["loc"])
        raise InvalidInput(f"options.{loc}: {first['msg'].removeprefix('Value error, ')}",
                           field=f"options.{loc}" if loc else "options") from exc
