"""A researcher's own training script in plain PyTorch: AdamW, cross-entropy with label
smoothing, a cosine schedule, its own DataLoader with torchvision transforms v2 and 2 workers.

The pipeline calls ``main(ctx)`` once per replica (config: ``train: "mypkg.train:main"``). The
lines marked ``# nondet`` are all it took to make each source of randomness its own seed's
(docs/own-script.md shows the diff against the script as it was).
"""

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset
from torchvision.transforms import v2

from .models import SmallCNN

DEFAULTS = {
    "epochs": 2,
    "batch_size": 128,
    "lr": 3e-3,
    "weight_decay": 0.05,
    "label_smoothing": 0.1,
    "channels": 16,
    "dropout": 0.2,
    "workers": 2,
}


def main(ctx):
    p = {**DEFAULTS, **ctx.params}
    data, device = ctx.data, ctx.device
    ctx.kernels()  # nondet: deterministic kernels unless the kernels source varies

    with ctx.init():  # nondet: the init seed
        model = SmallCNN(data.x_train.shape[1], data.num_classes, p["channels"], p["dropout"]).to(device)
    ctx.flip(model)  # nondet: the one-ulp flip, in bitflip replicas
    ctx.dropout(model, len(data.y_train))  # nondet: per-example dropout masks

    transform = v2.RandomCrop(data.x_train.shape[-1], padding=2)  # shifts up to 2 pixels, no flips
    train = TensorDataset(data.x_train.cpu(), data.y_train.cpu())
    train = ctx.augmented(train, transform)  # nondet: augmentation per (augment seed, epoch, example)
    sampler = ctx.sampler(len(train), p["batch_size"], keyed=True)  # nondet: order (shuffle) and resample (data)
    loader = DataLoader(train, batch_size=p["batch_size"], sampler=sampler, num_workers=p["workers"])

    opt = torch.optim.AdamW(model.parameters(), lr=p["lr"], weight_decay=p["weight_decay"])
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=p["epochs"] * len(loader))
    for epoch in range(p["epochs"]):
        model.train()
        total = 0.0
        for x, y, index in loader:
            ctx.select(epoch, index)  # nondet: these examples' dropout masks
            loss = F.cross_entropy(model(x.to(device)), y.to(device), label_smoothing=p["label_smoothing"])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss) * len(y)
        ctx.log(f"epoch {epoch + 1}/{p['epochs']} loss {total / len(sampler):.4f}")

    model.eval()
    with torch.no_grad():
        features = model.pool(model.body(data.x_test))
        logits = model.fc(features)
    ctx.save(logits, features=features)  # nondet: test-set logits and penultimate features
