"""The model bundle's ``manifest.json`` (DESIGN 3.1): its schema, and how each input maps between the
optimiser's normalised space and the tensors the model takes."""
from __future__ import annotations

import json
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from workers.engine.errors import BundleError

MODEL_FORMATS = ("onnx", "safetensors", "torch.export")


class InputSpec(BaseModel):
    """One positional input of the model.

    ``shape`` excludes the batch axis: ``[C, T, H, W]`` for ``NCTHW``, ``[C, H, W]`` for ``NCHW``. For an
    ``NCHW`` flow input with ``frames = L`` the channels are ``2L`` stacked (x, y) flow frames.
    RGB values the model sees are ``(x - mean) / std`` of pixels in [0, 1]; flow values are pixel
    displacements divided by ``scale``.
    """

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    modality: Literal["rgb", "flow"]
    layout: Literal["NCTHW", "NCHW"]
    shape: list[int] = Field(min_length=3, max_length=4)
    mean: list[float] | None = None
    std: list[float] | None = None
    scale: float | None = Field(default=None, gt=0)
    frames: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _consistent(self) -> "InputSpec":
        rank = 4 if self.layout == "NCTHW" else 3
        if len(self.shape) != rank:
            raise ValueError(f"layout {self.layout} needs a shape of {rank} numbers (no batch axis), got {self.shape}")
        if any(s <= 0 for s in self.shape):
            raise ValueError(f"shape entries must be positive, got {self.shape}")
        channels = self.shape[0]
        if self.modality == "rgb":
            expected = 3 if self.layout == "NCTHW" or self.frames is None else 3 * self.frames
            if channels != expected:
                raise ValueError(f"an rgb input needs {expected} channels, got {channels}")
        else:
            expected = 2 if self.layout == "NCTHW" else 2 * (self.frames or 1)
            if channels != expected:
                raise ValueError(
                    f"a flow input needs {expected} channels"
                    + (" (2 x frames)" if self.layout == "NCHW" else "") + f", got {channels}"
                )
        for key in ("mean", "std"):
            value = getattr(self, key)
            if value is not None and len(value) != 3:
                raise ValueError(f"{key} needs 3 numbers (R, G, B), got {len(value)}")
        if self.std is not None and any(s <= 0 for s in self.std):
            raise ValueError("std entries must be positive")
        return self

    @property
    def num_frames(self) -> int:
        """Frames this input carries: T for NCTHW, ``frames`` (default 1) for NCHW."""
        return self.shape[1] if self.layout == "NCTHW" else (self.frames or 1)

    @property
    def height(self) -> int:
        return self.shape[-2]

    @property
    def width(self) -> int:
        return self.shape[-1]

    @property
    def base_channels(self) -> int:
        """Channels of one frame: 3 for RGB, 2 for flow."""
        return 3 if self.modality == "rgb" else 2


class Manifest(BaseModel):
    """``manifest.json`` of a model bundle."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    version: str = Field(min_length=1)
    classes: list[str] = Field(min_length=2)
    format: Literal["onnx", "safetensors", "torch.export"]
    architecture: str | None = None
    architecture_kwargs: dict = Field(default_factory=dict)
    inputs: list[InputSpec] = Field(min_length=1)

    @model_validator(mode="after")
    def _consistent(self) -> "Manifest":
        if len(set(self.classes)) != len(self.classes):
            dupes = sorted({c for c in self.classes if self.classes.count(c) > 1})
            raise ValueError(f"class names must be unique; repeated: {dupes}")
        names = [i.name for i in self.inputs]
        if len(set(names)) != len(names):
            raise ValueError(f"input names must be unique, got {names}")
        if self.format == "safetensors" and not self.architecture:
            raise ValueError("format 'safetensors' needs an 'architecture' from the registry")
        return self

    def input(self, name: str) -> InputSpec:
        for spec in self.inputs:
            if spec.name == name:
                return spec
        raise KeyError(name)


def parse_manifest(raw: bytes | str | dict) -> Manifest:
    """Validate a manifest; every problem becomes a ``BundleError`` naming the field."""
    try:
        data = json.loads(raw) if isinstance(raw, (bytes, str)) else raw
    except json.JSONDecodeError as exc:
        raise BundleError(f"manifest.json is not valid JSON: {exc}", field="manifest") from exc
    if not isinstance(data, dict):
        raise BundleError("manifest.json must hold a JSON object", field="manifest")
    try:
        return Manifest.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first["loc"])
        field = f"manifest.{loc}" if loc else "manifest"
        kind = "missing" if first["type"] == "missing" else "invalid"
        msg = first["msg"].removeprefix("Value error, ")
        raise BundleError(f"manifest field {loc or '(root)'} is {kind}: {msg}", field=field) from exc
