"""Experiments: sweeps over model settings, baselines and seeds, and the results tables and plots.

    spec.py        SweepSpec: a YAML grid (recipe + overrides + grid + arms + seeds + a quick form) -> Points
    claims.py      the atomic "one worker per point" claim, a table beside Optuna's in the same database
    sweep.py       the runner on Optuna: one study per sweep, one trial per point, heartbeats, resume
    costs.py       the data's input shape, parameters and MACs of a point, the dry-run cost estimate
    throughput.py  train and inference images/s of an architecture (adapter over the benchmark harness)
    report.py      summaries -> results.csv, results.md and the plots

docs/experiments.md describes the spec format, the commands and the outputs. Importing this package does no
work; torch and optuna are imported by the functions that need them.
"""
