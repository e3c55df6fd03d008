"""Contact-center KPIs computed from the timeline, the reporting API, the live wallboard with its alerts,
and the same figures as Prometheus metrics."""
