"""Charts and reports logged to MLflow."""
