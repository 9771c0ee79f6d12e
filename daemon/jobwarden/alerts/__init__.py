"""Alerts: the store of the shared `alerts` table (dedup, resolve); fan-out comes later."""
