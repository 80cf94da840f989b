"""Talking to Slurm: pure command builders and parsers, transports, a batched client.

Shared by the local Slurm backend and the SSH backend (which runs the same
commands on a login node).
"""
