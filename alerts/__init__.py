"""Alerts and uptime: rules the hub evaluates every minute on the same SQL as the dashboard, their
states and history, the notifications they send (``notify/``), and health checks."""
