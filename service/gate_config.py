"""The release gate's configuration: read from a file committed next to the model code (``quirkscope.toml``'s
``[gate]`` table, or ``[tool.quirkscope.gate]`` in ``pyproject.toml``), validated with pydantic, then overridden by
command-line options. Every problem is an ``InvalidInput`` whose message names the file and the key.

```toml
[gate]                       # in pyproject.toml: [tool.quirkscope.gate]
baseline = "latest"          # --server: latest | AUDIT_ID | NAME@VERSION | none;  --embedded: a report JSON | none
timeout = 1800               # seconds to wait for the audit on a server
[gate.audit]                 # audit options (DESIGN 3.5): top_k, pairs, levels, seeds, steps, min_support, min_rate
steps = 64
[gate.rules]                 # each fail | warn | off, with its parameter
new_findings = { action = "fail", min_severity = "medium" }   # codes = ["LOCALIZED_CUE"]: only those count
confirmed_findings = "fail"
localized_cue = "warn"
confusion_rate = { action = "fail", max = 0.4 }
```
"""
from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Sequence

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from workers.audit.gate_rules import RULE_NAMES, GateRules
from workers.engine.errors import InvalidInput

CONFIG_FILE = "quirkscope.toml"
PYPROJECT = "pyproject.toml"


class GateConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    baseline: str | None = Field(default=None, description="see the module docstring; default latest (server), "
                                                           "none (embedded)")
    timeout: float = Field(default=3600.0, gt=0, description="seconds to wait for a server's audit")
    audit: dict[str, Any] = Field(default_factory=dict, description="audit options (AuditOptions)")
    rules: GateRules = GateRules()


def _validation_message(exc: ValidationError, where: str) -> tuple[str, str]:
    """(message, field) of the first problem, with unknown rules named as such."""
    first = exc.errors()[0]
    loc = [str(p) for p in first["loc"]]
    path = ".".join([where, *loc]) if where else ".".join(loc)
    if first["type"] == "extra_forbidden" and loc[:1] == ["rules"] and len(loc) == 2:
        return f"unknown rule {loc[1]!r} (the rules are {', '.join(RULE_NAMES)})", path
    return f"{first['msg'].removeprefix('Value error, ')}", path


def parse_gate_config(table: Any, source: str, where: str) -> GateConfig:
    """``GateConfig`` from the gate table of ``source`` (a file name, for messages) found at ``where``."""
    if not isinstance(table, dict):
        raise InvalidInput(f"{source}: {where} must be a table", field=f"{source}:{where}")
    try:
        return GateConfig.model_validate(table)
    except ValidationError as exc:
        message, path = _validation_message(exc, where)
        raise InvalidInput(f"{source}: {path}: {message}", field=f"{source}:{path}") from exc


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise InvalidInput(f"{path}: not valid TOML: {exc}", field=str(path)) from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"{path}: cannot be read: {exc}", field=str(path)) from exc


def load_gate_config(path: Path | None = None, cwd: Path | None = None) -> tuple[GateConfig, str | None]:
    """The gate config and where it came from: ``path`` (a quirkscope.toml-style file, or a pyproject.toml), else
    ``quirkscope.toml`` in ``cwd``, else ``[tool.quirkscope.gate]`` of ``cwd``'s pyproject.toml, else the defaults
    (source None)."""
    cwd = cwd or Path.cwd()
    if path is not None:
        if not path.is_file():
            raise InvalidInput(f"config file {path} does not exist", field="config")
        candidates = [path]
    else:
        candidates = [p for p in (cwd / CONFIG_FILE, cwd / PYPROJECT) if p.is_file()]
    for candidate in candidates:
        data = _read_toml(candidate)
        if candidate.name == PYPROJECT:
            table = data.get("tool", {}).get("quirkscope", {}).get("gate")
            if table is None:
                if path is not None:
                    raise InvalidInput(f"{candidate}: has no [tool.quirkscope.gate] table", field="config")
                continue
            return parse_gate_config(table, str(candidate), "tool.quirkscope.gate"), str(candidate)
        unknown = sorted(set(data) - {"gate"})
        if unknown:
            raise InvalidInput(f"{candidate}: unknown table or key {unknown[0]!r} (the gate's settings go in [gate])",
                               field=f"{candidate}:{unknown[0]}")
        return parse_gate_config(data.get("gate", {}), str(candidate), "gate"), str(candidate)
    return GateConfig(), None


def override_rules(rules: GateRules, assignments: Sequence[str] = (), *, min_severity: str | None = None,
                   max_confusion: float | None = None) -> GateRules:
    """``rules`` with the command line's ``--rule NAME=ACTION`` (repeatable), ``--min-severity`` (of
    new_findings) and ``--max-confusion`` (of confusion_rate, which it also turns on when it was off)."""
    values = rules.model_dump()
    for text in assignments:
        name, sep, action = text.partition("=")
        name = name.strip().replace("-", "_")
        if name not in RULE_NAMES:
            raise InvalidInput(f"unknown rule {name!r} in --rule {text!r} (the rules are {', '.join(RULE_NAMES)})",
                               field="rule")
        if not sep or action.strip() not in ("fail", "warn", "off"):
            raise InvalidInput(f"--rule {text!r}: give NAME=fail, NAME=warn or NAME=off", field="rule")
        values[name]["action"] = action.strip()
    if min_severity is not None:
        values["new_findings"]["min_severity"] = min_severity
    if max_confusion is not None:
        values["confusion_rate"]["max"] = max_confusion
        if values["confusion_rate"]["action"] == "off":
            values["confusion_rate"]["action"] = "fail"
    try:
        return GateRules.model_validate(values)
    except ValidationError as exc:
        message, path = _validation_message(exc, "rules")
        raise InvalidInput(f"{path}: {message}", field=path) from exc
