"""Learning rates, each XP on 2 workers (2 GPUs: one task per GPU under Slurm)."""

import treetable as tt

from adora import Explorer


class DDPExplorer(Explorer):
    def get_grid_metrics(self):
        return [tt.leaf("epoch"), tt.leaf("loss", ".2e"), tt.leaf("world_size")]


@DDPExplorer
def explorer(launcher):
    launcher.slurm_(gpus=2, mem_per_gpu=1, cpus_per_gpu=1, time=10)
    for lr in [0.02, 0.05]:
        launcher(lr=lr)
