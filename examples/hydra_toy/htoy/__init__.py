"""A tiny training package written the Dora way with Hydra, run by adora."""
