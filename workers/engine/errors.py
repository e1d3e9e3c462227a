"""The one exception hierarchy of QuirkScope; the CLI and the API map these to exit codes and HTTP codes."""
from __future__ import annotations


class QuirkScopeError(Exception):
    """Base of every error QuirkScope raises on purpose. ``field`` names the offending input, when there is one."""

    code = "quirkscope_error"

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class InvalidInput(QuirkScopeError):
    """A user-supplied value (option, confusion matrix, class name, ...) is malformed or out of range."""

    code = "invalid_input"


class InvalidConfusionMatrix(InvalidInput):
    code = "invalid_confusion_matrix"


class BundleError(QuirkScopeError):
    """A model bundle is incomplete, inconsistent, unsafe or in a refused format."""

    code = "invalid_bundle"


class UnsafeBundle(BundleError):
    """A bundle would execute code when loaded (pickle, TorchScript, a pickled .pt2 member)."""

    code = "unsafe_bundle"


class ModelLoadError(BundleError):
    """The bundle is well formed but the model could not be built or does not fit its manifest."""

    code = "model_load_error"


class ModelOutputError(BundleError):
    """The model loaded, but on the inputs an audit feeds it, it returns something unusable (NaN or infinite
    logits)."""

    code = "model_output_invalid"


class Unavailable(QuirkScopeError):
    """Something the command needed could not be had: a server was unreachable or failed, or the work it ran (an
    audit) failed or did not finish in time. Not the input's fault: the CLI's exit code 3, not 2."""

    code = "unavailable"
