"""Anomaly detection: hard rules for what is never healthy, per-metric change detectors against a
healthy band, a multivariate run-level profile score, and thresholds calibrated on healthy runs scored
out of sample. One API (scikit-learn / river style): `fit(healthy_runs)`, `update(step_row)` online,
`score_run(run)` offline."""
