"""The flow language: flow files (schema), loading with positions, validation, and the interpreter."""
