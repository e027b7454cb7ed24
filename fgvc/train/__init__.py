"""Training: the LightningModule, its optimization recipe, the LightningCLI, callbacks,
per-class reports and W&B logging.

    module.py     FGVCClassifier (optim.py: parameter groups, learning-rate schedule)
    cli.py        FGVCCLI, build_cli (callbacks.py: checkpoints, config, resume records;
                  interrupt.py: synchronized stop on Ctrl-C / SIGTERM; progress.py)
    reports.py    per-class accuracy, most-confused pairs, sample predictions
    loggers.py    CSVLogger (atomic run folders), WandbLogger (wandb_mode.py: auto mode)
"""
