"""Grids of the htoy example: `adora grid sweep`."""
