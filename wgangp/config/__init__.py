"""The configuration: the typed schema, override pre-checks and validation, in one place."""
