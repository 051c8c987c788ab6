"""Which upstream serves a request: health, balancing, retry budget."""
