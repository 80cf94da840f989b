"""A small sweep over learning rates and hidden sizes, written as for Dora."""

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
    launcher.bind_(epochs=8, epoch_time=0.3)
    for lr in [0.01, 0.05]:
        for hidden in [4, 16]:
            launcher(lr=lr, hidden=hidden)
    launcher(lr=0.05, activation="relu")
