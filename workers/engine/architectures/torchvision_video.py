"""The torchvision video classifiers as registry entries (``torchvision.r3d_18`` ...), always built with
``weights=None``: weights come from the bundle, never from a download."""
from __future__ import annotations

from collections.abc import Callable

from torch import nn
from torchvision.models import video

from workers.engine.architectures.registry import ArchitectureFactory, register_architecture
from workers.engine.errors import ModelLoadError

# kwargs that would make torchvision fetch or describe pretrained weights; a bundle carries its own weights.
_DOWNLOAD_KWARGS = frozenset({"weights", "weights_backbone", "pretrained", "progress"})

TORCHVISION_VIDEO_MODELS: dict[str, Callable[..., nn.Module]] = {
    "torchvision.r3d_18": video.r3d_18,
    "torchvision.mc3_18": video.mc3_18,
    "torchvision.r2plus1d_18": video.r2plus1d_18,
    "torchvision.s3d": video.s3d,
    "torchvision.mvit_v1_b": video.mvit_v1_b,
    "torchvision.swin3d_t": video.swin3d_t,
}


def _video_factory(name: str, builder: Callable[..., nn.Module]) -> ArchitectureFactory:
    def build(num_classes: int, **kwargs: object) -> nn.Module:
        refused = sorted(_DOWNLOAD_KWARGS.intersection(kwargs))
        if refused:
            raise ModelLoadError(
                f"architecture '{name}' takes its weights from the bundle; remove {', '.join(refused)} "
                "from architecture_kwargs",
                field="manifest.architecture_kwargs",
            )
        return builder(weights=None, num_classes=num_classes, **kwargs)

    build.__name__ = f"build_{name.split('.', 1)[1]}"
    build.__doc__ = f"``{builder.__module__}.{builder.__name__}(weights=None, num_classes=...)``"
    return build


for _name, _builder in TORCHVISION_VIDEO_MODELS.items():
    register_architecture(_name)(_video_factory(_name, _builder))
