"""Optimizers: one registry of samplers behind Optuna's interface, the domain they search, and proposing."""
