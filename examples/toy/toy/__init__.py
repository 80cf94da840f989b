"""A tiny training package written the Dora way, run by adora."""
