"""The Hydra parity project wrapped by adora."""

from adora import hydra_main


@hydra_main(config_name="config", config_path="conf", version_base="1.3")
def main(cfg):
    return cfg
