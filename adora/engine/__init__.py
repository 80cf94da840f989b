"""The engine: evaluate a grid, plan (pure), act on a backend, poll states, tail metrics."""
