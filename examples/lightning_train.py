"""A PyTorch Lightning script (a LightningModule, a LightningDataModule, ``Trainer.fit``) run by
the pipeline once per replica (config: ``train: "lightning_train:main"``, examples/lightning.yaml).

The lines marked ``# nondet`` are what changed from the plain Lightning script
(docs/own-script.md shows the diff): ``L.seed_everything(42)`` gave every source one seed; here
the weights come from the init seed (``ctx.init()``), the order and resample from the shuffle and
data seeds (``ctx.sampler``), the augmentation from the augment seed (``ctx.augmented``), the
dropout masks from the dropout seed (``ctx.dropout`` / ``ctx.select``). The Trainer's side files
(lightning_logs/, checkpoints) land in the job's scratch folder, its working folder.
"""

import lightning as L
import torch
import torch.nn.functional as F
from mypkg.models import SmallCNN
from torch.utils.data import DataLoader, TensorDataset
from torchvision.transforms import v2

DEFAULTS = {"epochs": 2, "batch_size": 128, "lr": 3e-3, "weight_decay": 0.05, "label_smoothing": 0.1, "workers": 2}


class LitCNN(L.LightningModule):
    def __init__(self, ctx, in_channels, num_classes, lr, weight_decay, label_smoothing, epochs):
        super().__init__()
        self.ctx = ctx  # nondet
        self.lr, self.weight_decay, self.label_smoothing, self.epochs = lr, weight_decay, label_smoothing, epochs
        with ctx.init():  # nondet: the init seed
            self.net = SmallCNN(in_channels, num_classes, channels=16, dropout=0.2)
        ctx.flip(self.net)  # nondet: the one-ulp flip, in bitflip replicas
        ctx.dropout(self.net, len(ctx.data.y_train))  # nondet: per-example dropout masks

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y, index = batch  # nondet: items carry their example index
        self.ctx.select(self.current_epoch, index)  # nondet: these examples' dropout masks
        loss = F.cross_entropy(self(x), y, label_smoothing=self.label_smoothing)
        self.log("train_loss", loss, prog_bar=True)
        return loss

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        steps = self.epochs * len(self.trainer.datamodule.train_dataloader())
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


class FashionData(L.LightningDataModule):
    def __init__(self, ctx, batch_size, workers):
        super().__init__()
        self.ctx, self.batch_size, self.workers = ctx, batch_size, workers  # nondet

    def train_dataloader(self):
        data = self.ctx.data
        transform = v2.RandomCrop(data.x_train.shape[-1], padding=2)
        train = TensorDataset(data.x_train.cpu(), data.y_train.cpu())
        train = self.ctx.augmented(train, transform)  # nondet: augmentation per (augment seed, epoch, example)
        sampler = self.ctx.sampler(len(train), self.batch_size, keyed=True)  # nondet: order and resample
        return DataLoader(
            train,
            batch_size=self.batch_size,
            sampler=sampler,  # nondet: instead of shuffle=True
            num_workers=self.workers,
            persistent_workers=self.workers > 0,
        )


def main(ctx):  # nondet: main(ctx) instead of argparse and seed_everything(42)
    p = {**DEFAULTS, **ctx.params}  # nondet
    data = ctx.data
    hp = (p["lr"], p["weight_decay"], p["label_smoothing"], p["epochs"])
    model = LitCNN(ctx, data.x_train.shape[1], data.num_classes, *hp)
    trainer = L.Trainer(
        max_epochs=p["epochs"],
        accelerator=ctx.device.type,  # nondet: the job's device
        devices=1,
        deterministic=ctx.seed("kernels") is None,  # nondet: the kernels source
        enable_progress_bar=p.get("progress_bar", True),
    )
    trainer.fit(model, datamodule=FashionData(ctx, p["batch_size"], p["workers"]))
    model.eval()
    with torch.no_grad():
        features = model.net.pool(model.net.body(data.x_test))
        logits = model.net.fc(features)
    ctx.save(logits, features=features)  # nondet: test logits (and labels) for the pipeline
