"""The Hydra parity project wrapped by Dora (runs in the Dora venv only)."""

from dora import hydra_main


@hydra_main(config_name="config", config_path="conf", version_base="1.3")
def main(cfg):
    return cfg
