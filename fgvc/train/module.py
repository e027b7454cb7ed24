"""``FGVCClassifier``: the LightningModule that fine-tunes an iSQRT-COV network.

Its constructor is the ``model:`` section of a config: the :func:`fgvc.models.build_model`
arguments (``num_classes`` and ``class_names`` are linked from the DataModule by the CLI)
and the optimization recipe.

Parameter groups (each split into decay / no-decay: every norm layer's weights and all biases
get no weight decay, unless ``weight_decay_all``)::

    backbone     the trunk (stem .. layer4)         lr * lr_mult_backbone
    head         1x1 reduction conv + BN            lr * lr_mult_head
    classifier   Linear                             lr * lr_mult_classifier (5, the authors')

The learning rate follows one ``LambdaLR`` per optimizer step: a schedule factor (step,
cosine with linear warmup, triangular, or constant) times a gate that is 0 for the backbone
groups during the first ``freeze_backbone_epochs`` epochs. A resumed run follows the schedule
of its own config from the point of training reached (:class:`fgvc.train.optim.RecipeLR`).
Gating by learning rate (instead of ``requires_grad``) keeps the set of trainable parameters
fixed, so DDP and every scheduler keep working; the frozen trunk's norm layers (BatchNorm,
LayerNorm, ...) also stay in eval mode, so their statistics do not move.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from pytorch_lightning.utilities import rank_zero_info
from torch import nn
from torchmetrics import MeanMetric, Metric, MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix

from fgvc.data.transforms import hflip_tta
from fgvc.models import REPRESENTATIONS, NetSpec
from fgvc.train.losses import Loss, class_offsets, imbalance_loss, training_class_counts
from fgvc.train.optim import RecipeLR, Schedule, check_recipe, lr_rule, parameter_groups, scaled_lr
from fgvc.train.pretrained import build_network
from fgvc.train.progress import epoch_label
from fgvc.train.resume import restart_training_iterator

#: The CLI's choices for ``model.representation``: the head table's names.
Representation = Literal[REPRESENTATIONS]


def _accuracy_metrics(
    num_classes: int, prefix: str, suffix: str = "", per_class: bool = True
) -> MetricCollection:
    # validate_args=False: the argument checks read values on the host, a GPU sync per step
    def accuracy(top_k: int, average: str) -> MulticlassAccuracy:
        return MulticlassAccuracy(num_classes, top_k=top_k, average=average, validate_args=False)

    metrics = {f"top1{suffix}": accuracy(1, "micro")}
    if per_class:  # its bincount reads a count on the host: a GPU sync, kept out of the step
        metrics[f"mean_class_acc{suffix}"] = accuracy(1, "macro")
    if num_classes >= 5:
        metrics[f"top5{suffix}"] = accuracy(5, "micro")
    return MetricCollection(metrics, prefix=prefix)


def _mean() -> MeanMetric:
    # "disable": no NaN check (a host sync per step), and a diverged loss shows as NaN. (It
    # also ignores update's weights in torchmetrics 1.x: callers pass per-item values.)
    return MeanMetric(nan_strategy="disable")


class FGVCClassifier(pl.LightningModule):
    """Fine-grained classifier: a ResNet with a representation head (iSQRT-COV by default)
    and its training recipe.

    Args:
        arch: a trunk: torchvision `resnet18..152`, `vgg16(_bn)`, `densenet121/161`, or
            `timm/<timm model name>` (see :data:`fgvc.models.TRUNKS`).
        num_classes: number of classes (linked from the DataModule).
        class_names: class names in label order (linked from the DataModule; logged, exported).
        representation: the head, a key of :data:`fgvc.models.HEADS`: ``"isqrt"`` (iSQRT-COV),
            ``"gap"`` (average pooling baseline), ``"mpncov"`` (MPN-COV, square root by
            eigendecomposition), ``"bcnn"`` (bilinear pooling) or ``"cbp"`` (compact bilinear
            pooling).
        reduce_dim: channels after the head's 1x1 reduction (256 for iSQRT-COV: a 32,896-d
            representation); ``null``: no reduction; ``"auto"``: the head's default.
        head: the head's own settings, e.g. ``{iterations: 5}`` for ``isqrt`` (Newton-Schulz
            iterations) or ``{projection_dim: 8192, seed: 0}`` for ``cbp``; missing ones take
            the head's defaults.
        pretrained: None, ``"imagenet"`` (``"imagenet:IMAGENET1K_V2"``, a timm tag or a
            weights file: ``imagenet:<choice>``), ``"isqrt-imagenet"``, a checkpoint path,
            or one of fgvc's runs: a run folder (its best checkpoint), an export folder or
            its ``model.safetensors`` (:mod:`fgvc.train.pretrained`: the whole network when
            the head is the same, the classifier fresh for other classes; else the trunk
            alone; another trunk is refused).
        last_stride: stride of the trunk's last stage (layer4 for ResNet; default: 1 for the
            second-order heads, 2 for gap, where the trunk accepts it).
        optimizer: ``"sgd"`` (momentum, the authors') or ``"adamw"``.
        lr: base learning rate, for a global batch of ``lr_batch_size`` (the authors': 1.2e-3
            for 10 images).
        lr_batch_size: the global batch ``lr`` is tuned for.
        lr_scaling: how ``lr`` follows the global batch (per-device batch x devices x nodes x
            gradient accumulation): ``"linear"``: ``lr * global batch / lr_batch_size``;
            ``"sqrt"``: ``lr * sqrt(global batch / lr_batch_size)``; ``"auto"`` (default):
            linear for SGD, sqrt for AdamW; ``"none"``: ``lr`` as it is. The rate used is
            printed at the start of training.
        momentum: SGD momentum.
        weight_decay: applied to conv and linear weights only (see ``weight_decay_all``).
        weight_decay_all: apply ``weight_decay`` to every parameter - norm layers, biases,
            position embeddings too - as the authors' code does (default False: those are
            not decayed).
        lr_mult_backbone, lr_mult_head, lr_mult_classifier: per-group multipliers of ``lr``.
        scheduler: ``"step"``, ``"cosine"``, ``"triangular"`` (linear up to the peak at
            ``warmup_epochs``, linear down to 0: FFCV's) or ``"constant"``
            (:class:`fgvc.train.optim.Schedule`).
        milestones: epochs at which ``"step"`` multiplies the rate by ``gamma``.
        gamma: step decay factor.
        warmup_epochs: linear warmup length for ``"cosine"``, peak epoch of
            ``"triangular"`` (may be fractional).
        label_smoothing: cross-entropy label smoothing.
        loss: the training loss (:mod:`fgvc.train.losses`): ``"ce"`` (cross-entropy),
            ``"weighted"`` (class weights ``N / (C * n_c)`` from the training split's class
            counts) or ``"logit_adjusted"`` (Menon et al. 2021: ``tau * log prior`` added to
            the logits in training). Validation and test losses stay plain cross-entropy.
        logit_adjust_tau: ``tau`` of ``"logit_adjusted"``.
        monitor: the validation figure that picks the best checkpoint: ``val/top1``,
            ``val/mean_class_acc``, ``val/top5``, their ``_tta`` forms, or ``val/loss`` (min).
        freeze_backbone_epochs: train only head and classifier for this many epochs.
        val_tta, test_tta: also report flip test-time augmentation (logits of the image and
            its mirror averaged) as ``*/top1_tta`` etc.; single-view figures are always there.
        channels_last: run the network in the channels-last memory format (faster
            convolutions with tensor cores); None: on CUDA only.
        compile: ``torch.compile`` the backbone for training (True: the default backend,
            inductor; or a backend's name). Compiled in place, so checkpoints keep their keys;
            the meta-layer stays outside the compiled graph.
    """

    def __init__(
        self,
        arch: str = NetSpec.arch,
        num_classes: int = NetSpec.num_classes,
        class_names: list[str] | None = None,
        representation: Representation = NetSpec.representation,
        reduce_dim: int | Literal["auto"] | None = NetSpec.reduce_dim,
        head: dict[str, Any] | None = None,
        pretrained: str | None = None,
        last_stride: int | None = NetSpec.last_stride,
        optimizer: Literal["sgd", "adamw"] = "sgd",
        lr: float = 1.2e-3,
        lr_batch_size: int = 10,
        lr_scaling: Literal["auto", "linear", "sqrt", "none"] = "auto",
        momentum: float = 0.9,
        weight_decay: float = 1e-4,
        weight_decay_all: bool = False,
        lr_mult_backbone: float = 1.0,
        lr_mult_head: float = 1.0,
        lr_mult_classifier: float = 5.0,
        scheduler: Literal["step", "cosine", "triangular", "constant"] = "step",
        milestones: list[int] | None = None,
        gamma: float = 0.1,
        warmup_epochs: float = 0.0,
        label_smoothing: float = 0.0,
        loss: Loss = "ce",
        logit_adjust_tau: float = 1.0,
        monitor: str = "val/top1",
        freeze_backbone_epochs: int = 0,
        val_tta: bool = True,
        test_tta: bool = True,
        channels_last: bool | None = None,
        compile: bool | str = False,
    ) -> None:
        super().__init__()
        if class_names is not None and len(class_names) != num_classes:
            raise ValueError(
                f"class_names has {len(class_names)} names but num_classes={num_classes}"
            )
        self.save_hyperparameters()
        check_recipe(self.hparams)
        spec = NetSpec(arch, num_classes, representation, reduce_dim, head, last_stride)
        self.model = build_network(spec, pretrained, class_names)
        self.class_names = (
            list(class_names) if class_names else [str(i) for i in range(num_classes)]
        )
        # per-class weights or logit offsets of the loss, from the training split (setup)
        self.register_buffer("class_offsets", None, persistent=False)
        self.train_loss = _mean()
        self.train_acc = _accuracy_metrics(num_classes, "train/", per_class=False)
        self.eval_loss = nn.ModuleDict({s: _mean() for s in ("val", "test")})
        self.eval_acc = nn.ModuleDict(
            {s: _accuracy_metrics(num_classes, f"{s}/") for s in ("val", "test")}
        )
        self.eval_acc_tta = nn.ModuleDict(
            {s: _accuracy_metrics(num_classes, f"{s}/", "_tta") for s in ("val", "test")}
        )
        # for the per-class reports (fgvc.train.reports.EvalReports); TTA logits when enabled
        self.confmat = nn.ModuleDict(
            {
                s: MulticlassConfusionMatrix(num_classes, validate_args=False)
                for s in ("val", "test")
            }
        )
        if monitor not in self.monitor_choices():
            raise ValueError(
                f"model.monitor {monitor!r} is not logged by validation; choose one of "
                f"{', '.join(self.monitor_choices())}"
            )

    @property
    def spec(self) -> NetSpec:
        """The network's architecture (what checkpoints and bundles record)."""
        return self.model.spec

    def monitor_choices(self) -> list[str]:
        """The values ``model.monitor`` accepts: the figures validation logs."""
        names = [*self.eval_acc["val"].keys(), "val/loss"]
        return sorted(names + (list(self.eval_acc_tta["val"]) if self.hparams.val_tta else []))

    # ----------------------------------------------------------------- forward
    def setup(self, stage: str) -> None:
        if stage == "fit" and self.hparams.loss != "ce":
            hp = self.hparams
            counts = training_class_counts(self.trainer.datamodule, hp.num_classes, hp.loss)
            offsets = class_offsets(hp.loss, counts, hp.logit_adjust_tau)
            self.class_offsets = offsets.float().to(self.device)
        if self._channels_last():
            self.model.to(memory_format=torch.channels_last)
        choice = self.hparams.compile
        if choice and stage == "fit":
            backend = {} if choice is True else {"backend": choice}
            self.model.backbone.compile(**backend)  # in place: state-dict keys stay the same

    def _channels_last(self) -> bool:
        choice = self.hparams.channels_last
        return self.device.type == "cuda" if choice is None else bool(choice)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.dim() == 4 and self._channels_last():
            images = images.contiguous(memory_format=torch.channels_last)
        return self.model(images)

    def predict_logits(self, images: torch.Tensor, tta: bool = False) -> torch.Tensor:
        """Logits, or with ``tta`` the mean of the image's and its mirror's logits."""
        return hflip_tta(self, images) if tta else self(images)

    # ---------------------------------------------------------------- training
    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> Any:
        images, labels = batch
        logits = self(images)
        hp = self.hparams
        loss = imbalance_loss(
            logits.float(), labels, hp.loss, self.class_offsets, hp.label_smoothing
        )
        self.train_loss(loss.detach())
        self.train_acc.update(logits.detach(), labels)  # logged per epoch only
        self.log("train/loss", self.train_loss, on_step=True, on_epoch=True, prog_bar=True)
        self.log_dict(self.train_acc, on_step=False, on_epoch=True)
        return loss

    def on_train_start(self) -> None:
        restart_training_iterator(self.trainer)
        scheduler = self.lr_schedulers()
        resumed = getattr(scheduler, "resumed_from", None)
        if resumed is None:
            return
        old_step, old_per_epoch = resumed
        per_epoch = scheduler.steps_per_epoch
        moved = ""
        if old_per_epoch != per_epoch:  # another global batch
            moved = (
                f"; {old_per_epoch} steps an epoch before, {per_epoch} now: step {old_step} "
                f"of the old schedule is step {scheduler.last_epoch} of this one"
            )
        rates = {g["group"]: g["lr"] for g in scheduler.optimizer.param_groups}
        rates = ", ".join(f"{name} {lr:.4g}" for name, lr in rates.items())
        rank_zero_info(
            f"continuing with {epoch_label(self.current_epoch, self.trainer.max_epochs)} on "
            f"this config's {self.hparams.scheduler} schedule{moved}; learning rates: {rates}"
        )

    def on_train_epoch_start(self) -> None:
        # Frozen backbone: its norm layers' statistics stay put too. Set both ways each epoch:
        # Lightning restores per-module modes, so an eval set here would otherwise stick.
        frozen = self.current_epoch < self.hparams.freeze_backbone_epochs
        self.model.backbone.set_frozen(frozen, self.training)

    # -------------------------------------------------------------- evaluation
    # Steps only update the metrics; each epoch computes them once on every process (a
    # synced sum over all processes' images) and logs the results. Evaluation shards differ
    # in length, so nothing may depend on every process running the same number of steps.
    def _eval_step(self, stage: str, batch: tuple[torch.Tensor, torch.Tensor]) -> dict:
        images, labels = batch
        logits = self(images)
        # per image, so that the epoch's loss is the mean over images whatever the batches
        losses = F.cross_entropy(logits.float(), labels, reduction="none")
        self.eval_loss[stage].update(losses)
        self.eval_acc[stage].update(logits, labels)
        if self.hparams[f"{stage}_tta"]:
            logits = hflip_tta(self, images, logits)
            self.eval_acc_tta[stage].update(logits, labels)
        # the reports (confusion matrix, samples) follow what the run calls its accuracy
        self.confmat[stage].update(logits, labels)
        return {"logits": logits.detach()}

    def _eval_metrics(self, stage: str) -> list[Metric]:
        metrics: list[Metric] = [self.eval_loss[stage], self.confmat[stage]]
        return (
            metrics + list(self.eval_acc[stage].values()) + list(self.eval_acc_tta[stage].values())
        )

    def _start_eval(self, stage: str) -> None:
        for metric in self._eval_metrics(stage):
            metric.reset()

    def _end_eval(self, stage: str) -> None:
        values = {f"{stage}/loss": self.eval_loss[stage].compute()}
        values.update(self.eval_acc[stage].compute())
        if self.hparams[f"{stage}_tta"]:
            values.update(self.eval_acc_tta[stage].compute())
        # already over all processes' images, the same on every process: sync_dist averages
        # equal values (and keeps Lightning from warning about unsynced epoch values)
        # the progress bar: the loss, and for validation the single-view accuracies
        shown = {k for k in values if k.endswith("/loss") or (stage == "val" and "_tta" not in k)}
        self.log_dict(
            {k: v for k, v in values.items() if k in shown}, prog_bar=True, sync_dist=True
        )
        self.log_dict({k: v for k, v in values.items() if k not in shown}, sync_dist=True)

    def on_validation_epoch_start(self) -> None:
        self._start_eval("val")

    def on_test_epoch_start(self) -> None:
        self._start_eval("test")

    def on_validation_epoch_end(self) -> None:
        self._end_eval("val")

    def on_test_epoch_end(self) -> None:
        self._end_eval("test")

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> dict:
        return self._eval_step("val", batch)

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> dict:
        return self._eval_step("test", batch)

    def predict_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        images = batch[0] if isinstance(batch, list | tuple) else batch
        return self.predict_logits(images, tta=self.hparams.test_tta).softmax(-1)

    # ---------------------------------------------------------------- optimizer
    def lr_multipliers(self) -> dict[str, float]:
        """Each part's multiplier of the base rate (``lr_mult_<part>``)."""
        hp = self.hparams
        return {
            "backbone": hp.lr_mult_backbone,
            "head": hp.lr_mult_head,
            "classifier": hp.lr_mult_classifier,
        }

    def parameter_groups(self, lr: float | None = None) -> list[dict[str, Any]]:
        """Six groups: (backbone, head, classifier) x (decay, no decay), with ``lr_mult``
        (``lr``: the base rate, ``model.lr`` by default)."""
        hp = self.hparams
        lr, mults = hp.lr if lr is None else lr, self.lr_multipliers()
        return parameter_groups(self.model, lr, hp.weight_decay, mults, hp.weight_decay_all)

    def global_batch_size(self) -> int | None:
        """Images per optimizer step over all processes, or None when the per-device batch
        is unknown (a DataModule without ``batch_size``)."""
        trainer = self.trainer
        per_device = getattr(trainer.datamodule, "batch_size", None)
        if not isinstance(per_device, int):
            return None
        return per_device * trainer.world_size * trainer.accumulate_grad_batches

    def effective_lr(self) -> float:
        """The base rate this run uses (see ``lr_scaling``), announced once."""
        hp = self.hparams
        batch = self.global_batch_size()
        rule = lr_rule(hp.lr_scaling, hp.optimizer)
        lr = scaled_lr(hp.lr, hp.lr_batch_size, batch, rule)
        trainer = self.trainer
        if batch is None:
            rank_zero_info(
                f"learning rate {lr:.4g} (model.lr as it is: the global batch is unknown, the "
                f"DataModule has no batch_size)"
            )
            return lr
        per_device = batch // (trainer.world_size * trainer.accumulate_grad_batches)
        how = "model.lr_scaling: none" if rule == "none" else f"{rule} scaling"
        if hp.lr_scaling == "auto" and rule != "none":
            how += f" (auto for {hp.optimizer})"
        rank_zero_info(
            f"learning rate {lr:.4g} ({how}; model.lr {hp.lr:g} is for a global batch of "
            f"{hp.lr_batch_size}; global batch {batch} = {trainer.world_size} process(es) x "
            f"{per_device} images x {trainer.accumulate_grad_batches} accumulated)"
        )
        return lr

    def configure_optimizers(self) -> dict[str, Any]:
        hp = self.hparams
        lr = self.effective_lr()
        groups = self.parameter_groups(lr)
        if hp.optimizer == "sgd":
            optimizer = torch.optim.SGD(groups, lr=lr, momentum=hp.momentum)
        else:
            optimizer = torch.optim.AdamW(groups, lr=lr)
        total = int(self.trainer.estimated_stepping_batches)
        epochs = max(1, self.trainer.max_epochs or 1)
        per_epoch = max(1, math.ceil(total / epochs))
        milestones = list(hp.milestones) if hp.milestones else []

        def schedule(frozen: int) -> Schedule:
            return Schedule(
                hp.scheduler, per_epoch, total, milestones, hp.gamma, hp.warmup_epochs, frozen
            )

        lambdas = [
            schedule(hp.freeze_backbone_epochs if g["group"] == "backbone" else 0) for g in groups
        ]
        scheduler = RecipeLR(optimizer, lambdas)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step", "frequency": 1},
        }
