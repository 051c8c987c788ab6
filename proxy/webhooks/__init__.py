"""Outbound webhooks: events written to a durable outbox in the same
transaction as the change that caused them, then delivered, signed, with
retries (see outbox.py for the seam every feature emits through)."""
