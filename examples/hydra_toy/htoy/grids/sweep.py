"""A small sweep over learning rates and model sizes, written as for Dora with Hydra."""

import treetable as tt

from adora import Explorer


class MyExplorer(Explorer):
    def get_grid_metrics(self):
        return [
            tt.group("train", [tt.leaf("loss", ".4f")]),
            tt.group("valid", [tt.leaf("loss", ".4f")]),
        ]


@MyExplorer
def explorer(launcher):
    # Hydra overrides as dicts: nested keys are dotted, values are written in Hydra's syntax.
    launcher.bind_({"optim.epochs": 8, "epoch_time": 0.3})
    for lr in [0.01, 0.05]:
        for model in ["small", "big"]:
            # `model` is a config group: its value is passed as is (model=big).
            launcher({"optim.lr": lr, "model": model})
    # A key that is not in the base config needs a `+`.
    launcher({"optim.lr": 0.05, "model.activation": "relu", "+tag": "relu"})
