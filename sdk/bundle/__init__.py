"""Support bundles: one zip that lets someone else debug a run (``run_bundle``),
read back by ``inspect``; the environment a run records at its start
(``environment``) is part of it."""
