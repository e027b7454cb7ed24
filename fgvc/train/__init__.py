"""Training: the LightningModule, its optimization recipe, the LightningCLI, callbacks,
per-class reports and W&B logging.

    module.py     FGVCClassifier (optim.py: parameter groups, learning-rate schedule)
    cli.py        FGVCCLI, build_cli (callbacks.py: checkpoints, interruption, config)
    reports.py    per-class accuracy, most-confused pairs, sample predictions
    loggers.py    WandbLogger (offline by itself without key or network)
"""
