"""Chart builders, pure functions of a search's records (installed as ``autopeft.dashboards``):
the Pareto chart and the hypervolume trace, logged to the parent MLflow run."""
