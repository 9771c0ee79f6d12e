"""Watching the jobs: sampling job_metrics, history, expectations, rules, baselines."""
