"""Model registry: versions of policies and reward models with their lineage."""
