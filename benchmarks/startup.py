"""How long fgvc commands take to start, against bare ``import torch`` and Lightning imports.

Each command runs in a fresh interpreter (``python -m fgvc ...``), as a user types it; the
baselines are ``python -c "import torch"`` and ``python -c "import pytorch_lightning"`` on the
same machine, in the same run, interleaved round by round with the commands (so load from
elsewhere hits them alike). Timed: ``--help`` of predict, export, explain, ``data check`` and
``fit`` (fit's help is built by LightningCLI, so it is held to the Lightning import), and
``fgvc predict`` of one image with a small bundle made here (ResNet-18 trunk, 3 classes,
32 px; exported with ONNX, as ``fgvc export`` does), on ONNX Runtime (the default) and on
PyTorch (``--backend torch``, which builds the network and so imports torchvision).

    python benchmarks/startup.py                          # 5 rounds after 1 warm-up
    python benchmarks/startup.py --repeats 9
    python benchmarks/startup.py --compare /path/to/other/checkout   # before / after

``--compare`` times the same commands of another fgvc checkout (e.g. the commit before a
change) in the same rounds. Goal (issue 18): every ``--help`` and ``predict`` within 1.5x of
``import torch``; ``fit --help`` within 1.5x of ``import pytorch_lightning``.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # this checkout's fgvc makes the bundle, whatever is installed
#: the goal's bound on a command's time over its baseline's
GOAL = 1.5


def make_bundle(folder: Path) -> tuple[Path, Path]:
    """A tiny trained-looking checkpoint exported as a bundle, and an image; (bundle, image)."""
    import numpy as np
    from _bundle import export_random_net
    from PIL import Image

    bundle = export_random_net(folder)
    image = folder / "bird.png"
    pixels = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(image)
    return bundle, image


def commands(bundle: Path, image: Path) -> dict[str, list[str]]:
    """Name -> arguments after ``python``; the two baselines first."""
    fgvc = ["-m", "fgvc"]
    predict = [*fgvc, "predict", str(image), "--model", str(bundle), "--no-progress"]
    return {
        "import torch": ["-c", "import torch"],
        "import pytorch_lightning": ["-c", "import pytorch_lightning"],
        "fgvc --help": [*fgvc, "--help"],
        "fgvc predict --help": [*fgvc, "predict", "--help"],
        "fgvc export --help": [*fgvc, "export", "--help"],
        "fgvc explain --help": [*fgvc, "explain", "--help"],
        "fgvc data check --help": [*fgvc, "data", "check", "--help"],
        "fgvc fit --help": [*fgvc, "fit", "--help"],
        "fgvc predict 1 image (onnx)": predict,
        "fgvc predict 1 image (torch)": [*predict, "--backend", "torch", "--device", "cpu"],
    }


def timed(args: list[str], repo: Path, cwd: Path) -> float:
    env = {**os.environ, "PYTHONPATH": str(repo), "PYTHONDONTWRITEBYTECODE": "1"}
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(args)} (PYTHONPATH={repo}) failed:\n{proc.stderr[-2000:]}")
    return seconds


def baseline_of(name: str) -> str:
    return "import pytorch_lightning" if name.startswith("fgvc fit") else "import torch"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds (default 5)")
    parser.add_argument("--compare", type=Path, help="another fgvc checkout to time alike")
    args = parser.parse_args(argv)
    repos = {"this": REPO, **({"compare": args.compare.resolve()} if args.compare else {})}

    with tempfile.TemporaryDirectory() as tmp:
        bundle, image = make_bundle(Path(tmp))
        runs = [
            (repo, name, cmd)
            for repo in repos
            for name, cmd in commands(bundle, image).items()
            if repo == "this" or name.startswith("fgvc")  # baselines once
        ]
        load_before = os.getloadavg()
        samples: dict[tuple[str, str], list[float]] = {(r, n): [] for r, n, _ in runs}
        for round_ in range(args.repeats + 1):  # round 0 warms the file cache up
            for repo, name, cmd in runs:
                seconds = timed(cmd, repos[repo], Path(tmp))
                if round_:
                    samples[repo, name].append(seconds)
        load_after = os.getloadavg()

    median = {key: statistics.median(values) for key, values in samples.items()}
    import torch

    print(
        f"python {platform.python_version()}, torch {torch.__version__}, "
        f"{platform.machine()}, {os.cpu_count()} CPUs; median of {args.repeats} rounds "
        f"after 1 warm-up; load average {load_before[0]:.1f} before, {load_after[0]:.1f} after"
    )
    header = f"{'command':<32} {'s':>6} {'x base':>7}"
    if args.compare:
        header += f" {'compare s':>10} {'x base':>7}"
    print(header + "  baseline")
    for name in commands(Path("b"), Path("i")):
        base = median["this", baseline_of(name)]
        line = f"{name:<32} {median['this', name]:6.2f} {median['this', name] / base:7.2f}"
        if args.compare and name.startswith("fgvc"):
            other = median["compare", name]
            line += f" {other:10.2f} {other / base:7.2f}"
        elif args.compare:
            line += " " * 18
        print(f"{line}  {baseline_of(name) if name.startswith('fgvc') else ''}".rstrip())
    over = [
        name
        for name in commands(Path("b"), Path("i"))
        if name.startswith("fgvc")
        and "(torch)" not in name
        and median["this", name] > GOAL * median["this", baseline_of(name)]
    ]
    print(f"over {GOAL}x their baseline: {', '.join(over) if over else 'none'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
