"""Running a search: prepare (all checks, no side effects), the worker pool on Ray, the search loop."""
