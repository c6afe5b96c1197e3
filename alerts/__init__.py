"""Threshold alerting: rules, lifecycle and notifiers (built out by a later issue)."""
