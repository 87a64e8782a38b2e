"""THE single source of truth for the pipeline (standard library only)."""
