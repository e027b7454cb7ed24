"""A bundle made here for the benchmarks: a randomly initialized network saved as the
checkpoint ``fgvc fit`` would write (as far as export reads it), then exported by fgvc."""

from __future__ import annotations

from pathlib import Path


def export_random_net(
    folder: Path,
    arch: str = "resnet18",
    num_classes: int = 3,
    image_size: int = 32,
    reduce_dim: int = 8,
    iterations: int = 3,
) -> Path:
    """``folder/bundle`` exported (default formats, verified) from ``folder/random.ckpt``."""
    import torch

    from fgvc.data.preprocessing import EvalPreprocessing
    from fgvc.deploy.export import export_checkpoint
    from fgvc.models import build_model

    torch.manual_seed(0)
    net = build_model(
        arch, num_classes=num_classes, reduce_dim=reduce_dim, head={"iterations": iterations}
    )
    names = [f"class {i:03d}" for i in range(num_classes)]
    checkpoint = {
        "hyper_parameters": {**net.spec.to_dict(), "class_names": names},
        "state_dict": {f"model.{k}": v for k, v in net.state_dict().items()},
        "DataModule": {"eval_preprocessing": EvalPreprocessing(image_size, "cub").to_dict()},
        "epoch": 0,
        "global_step": 1,
    }
    torch.save(checkpoint, folder / "random.ckpt")
    return export_checkpoint(folder / "random.ckpt", folder / "bundle")
