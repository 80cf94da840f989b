"""Train a one-hidden-layer MLP on generated regression data, in pure Python.

The Hydra flavour of examples/toy: hyper-parameters come from config/ (the
`model` group picks the size, `optim.lr` is nested), metrics go to
`xp.link.push_metrics`, and a checkpoint in the XP folder (which is Hydra's run
directory) lets a restarted run resume where it stopped.
"""

import json
import logging
import math
import random
import time

from adora import get_xp, hydra_main

logger = logging.getLogger(__name__)


def make_data(seed, n=256, dim=4, noise=0.1):
    rng = random.Random(seed)
    true_w = [rng.uniform(-1, 1) for _ in range(dim)]
    data = []
    for _ in range(n):
        x = [rng.uniform(-1, 1) for _ in range(dim)]
        y = math.sin(sum(w * v for w, v in zip(true_w, x, strict=True))) + rng.gauss(0, noise)
        data.append((x, y))
    return data[: n * 3 // 4], data[n * 3 // 4:]


class MLP:
    def __init__(self, dim, hidden, activation, seed):
        rng = random.Random(seed + 1)
        self.w1 = [[rng.gauss(0, 1 / math.sqrt(dim)) for _ in range(dim)] for _ in range(hidden)]
        self.b1 = [0.0] * hidden
        self.w2 = [rng.gauss(0, 1 / math.sqrt(hidden)) for _ in range(hidden)]
        self.b2 = 0.0
        self.relu = activation == "relu"

    def act(self, z):
        return max(0.0, z) if self.relu else math.tanh(z)

    def dact(self, a, z):
        return (1.0 if z > 0 else 0.0) if self.relu else 1 - a * a

    def forward(self, x):
        zs = [sum(w * v for w, v in zip(row, x, strict=True)) + b
              for row, b in zip(self.w1, self.b1, strict=True)]
        hs = [self.act(z) for z in zs]
        return zs, hs, sum(w * h for w, h in zip(self.w2, hs, strict=True)) + self.b2

    def step(self, x, y, lr):
        zs, hs, out = self.forward(x)
        err = out - y
        for j, (z, h) in enumerate(zip(zs, hs, strict=True)):
            grad_h = err * self.w2[j] * self.dact(h, z)
            self.w2[j] -= lr * err * h
            self.b1[j] -= lr * grad_h
            row = self.w1[j]
            for i, v in enumerate(x):
                row[i] -= lr * grad_h * v
        self.b2 -= lr * err
        return err * err

    def loss(self, data):
        return sum((self.forward(x)[2] - y) ** 2 for x, y in data) / len(data)

    def state(self):
        return {"w1": self.w1, "b1": self.b1, "w2": self.w2, "b2": self.b2}

    def load(self, state):
        self.w1, self.b1, self.w2, self.b2 = state["w1"], state["b1"], state["w2"], state["b2"]


@hydra_main(config_path="config", config_name="config", version_base="1.1")
def main(cfg):
    xp = get_xp()
    train, valid = make_data(cfg.data.seed, n=cfg.data.size, noise=cfg.data.noise)
    model = MLP(len(train[0][0]), cfg.model.hidden, cfg.model.activation, cfg.data.seed)
    checkpoint = xp.folder / "checkpoint.json"
    start = len(xp.link.history)
    if start and checkpoint.exists():
        model.load(json.loads(checkpoint.read_text()))
        logger.info("Resuming %s at epoch %d", xp.sig, start)
    rng = random.Random(cfg.data.seed + start)
    for epoch in range(start, cfg.optim.epochs):
        if epoch == cfg.fail_at:
            raise RuntimeError(f"Failing on purpose at epoch {epoch}")
        rng.shuffle(train)
        train_loss = sum(model.step(x, y, cfg.optim.lr) for x, y in train) / len(train)
        valid_loss = model.loss(valid)
        time.sleep(cfg.epoch_time)
        tmp = checkpoint.with_suffix(".tmp")
        tmp.write_text(json.dumps(model.state()))
        tmp.replace(checkpoint)
        xp.link.push_metrics({"train": {"loss": train_loss}, "valid": {"loss": valid_loss}})
        logger.info("epoch %d/%d train %.4f valid %.4f",
                    epoch + 1, cfg.optim.epochs, train_loss, valid_loss)
    return xp.link.history[-1] if xp.link.history else None
