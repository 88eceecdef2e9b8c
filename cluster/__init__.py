"""Cluster profiles shipped with skybatch (YAML files; see skybatch.cluster)."""
