"""What a search records: the study (every key it stores), the run directory, MLflow tracking, Pareto fronts."""
