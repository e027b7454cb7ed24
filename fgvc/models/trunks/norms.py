"""Norm layers of any kind: which parameters skip weight decay, and freezing them."""

from __future__ import annotations

from torch import nn

#: torch's norm layers with parameters or statistics (BatchNorm/InstanceNorm, GroupNorm,
#: LayerNorm, RMSNorm); library ones (timm's LayerNorm2d, RmsNorm, BatchNormAct2d, ...)
#: derive from these or say ``Norm`` in their class name.
_TORCH_NORMS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm, nn.RMSNorm)


def is_norm(module: nn.Module) -> bool:
    """Whether ``module`` is a normalization layer (its own parameters are scale/shift)."""
    if isinstance(module, _TORCH_NORMS):
        return True
    # by name only leaves: a container called ``...Norm...`` (timm's NormMlpClassifierHead)
    # holds other layers too
    return "norm" in type(module).__name__.lower() and not any(module.children())


def no_decay_parameter_names(module: nn.Module) -> set[str]:
    """Names (as ``module.named_parameters()`` gives them) of the parameters that get no
    weight decay: every norm layer's, every bias, and those a library model lists in its
    own ``no_weight_decay()`` (timm: position embeddings and class tokens)."""
    names: set[str] = set()
    for prefix, sub in module.named_modules():
        dot = f"{prefix}." if prefix else ""
        for pname, _ in sub.named_parameters(recurse=False):
            if is_norm(sub) or pname == "bias":
                names.add(dot + pname)
        listed = getattr(sub, "no_weight_decay", None)
        if sub is not module and callable(listed):
            own = {n for n, _ in sub.named_parameters()}
            names.update(dot + n for n in listed() if n in own)
    return names


def set_norms_training(module: nn.Module, training: bool) -> None:
    """Put every norm layer of ``module`` in train or eval mode (BatchNorm's statistics
    stay put in eval; the others have none, but a frozen part behaves the same either way)."""
    for sub in module.modules():
        if is_norm(sub):
            sub.train(training)
