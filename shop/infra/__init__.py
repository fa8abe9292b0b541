"""Library adapters and speed work: every override of a library's behaviour, each with its reason."""
