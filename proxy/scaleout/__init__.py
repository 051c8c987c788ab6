"""More than one gateway: admin actions broadcast to the others (broadcast.py)."""
