"""Train a one-hidden-layer MLP on generated regression data, in pure Python.

Written exactly as a Dora training module, with `adora` in place of `dora`:
hyper-parameters come from argparse, metrics go to `xp.link.push_metrics`,
a checkpoint in the XP folder lets a restarted run resume where it stopped.
"""

import argparse
import json
import math
import random
import time

from adora import argparse_main, get_xp

parser = argparse.ArgumentParser("toy")
parser.add_argument("--lr", type=float, default=0.05)
parser.add_argument("--hidden", type=int, default=8)
parser.add_argument("--epochs", type=int, default=10)
parser.add_argument("--seed", type=int, default=42)
parser.add_argument("--noise", type=float, default=0.1)
parser.add_argument("--activation", choices=["tanh", "relu"], default="tanh")
parser.add_argument("--epoch_time", type=float, default=0.0,
                    help="Extra seconds per epoch, to watch a grid progress.")
parser.add_argument("--fail_at", type=int, default=-1, help="Crash at this epoch (tests).")
parser.add_argument("--fail_once_at", type=int, default=-1,
                    help="Crash at this epoch the first time only (tests).")
parser.add_argument("--num_workers", type=int, default=1, help="Excluded from the signature.")
parser.add_argument("--note", default="", help="A free-form note, printed at start.")


def make_data(seed, n=256, dim=4, noise=0.1):
    rng = random.Random(seed)
    true_w = [rng.uniform(-1, 1) for _ in range(dim)]
    data = []
    for _ in range(n):
        x = [rng.uniform(-1, 1) for _ in range(dim)]
        y = math.sin(sum(w * v for w, v in zip(true_w, x))) + rng.gauss(0, noise)
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
        zs = [sum(w * v for w, v in zip(row, x)) + b for row, b in zip(self.w1, self.b1)]
        hs = [self.act(z) for z in zs]
        return zs, hs, sum(w * h for w, h in zip(self.w2, hs)) + self.b2

    def step(self, x, y, lr):
        zs, hs, out = self.forward(x)
        err = out - y
        for j, (z, h) in enumerate(zip(zs, hs)):
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


@argparse_main(parser=parser, dir="./outputs", exclude=["num_workers", "epoch_time"])
def main():
    xp = get_xp()
    args = xp.cfg
    train, valid = make_data(args.seed, noise=args.noise)
    model = MLP(len(train[0][0]), args.hidden, args.activation, args.seed)
    checkpoint = xp.folder / "checkpoint.json"
    start = len(xp.link.history)
    if args.note:
        print(f"note: {args.note!r}", flush=True)
    if start and checkpoint.exists():
        model.load(json.loads(checkpoint.read_text()))
        print(f"Resuming {xp.sig} at epoch {start}", flush=True)
    rng = random.Random(args.seed + start)
    for epoch in range(start, args.epochs):
        if epoch == args.fail_at:
            raise RuntimeError(f"Failing on purpose at epoch {epoch}")
        failed_once = xp.folder / "failed_once"
        if epoch == args.fail_once_at and not failed_once.exists():
            failed_once.touch()
            raise RuntimeError(f"Failing on purpose at epoch {epoch}, this time only")
        rng.shuffle(train)
        train_loss = sum(model.step(x, y, args.lr) for x, y in train) / len(train)
        valid_loss = model.loss(valid)
        time.sleep(args.epoch_time)
        tmp = checkpoint.with_suffix(".tmp")
        tmp.write_text(json.dumps(model.state()))
        tmp.replace(checkpoint)
        xp.link.push_metrics({"train": {"loss": train_loss}, "valid": {"loss": valid_loss}})
        print(f"epoch {epoch + 1}/{args.epochs} train {train_loss:.4f} valid {valid_loss:.4f}",
              flush=True)
    return xp.link.history[-1] if xp.link.history else None
