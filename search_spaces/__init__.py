"""Search spaces shipped with autopeft (YAML files)."""
