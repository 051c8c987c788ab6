"""Outbound webhooks: events written to a durable outbox in the same
transaction as the change that caused them, then delivered, signed, with
retries. Nothing is imported here, so any feature can import `outbox` to emit
without pulling in the routes.

    outbox.py          emit(): the events, deliveries and "fired once" tables
    signing.py         Standard Webhooks v1 signatures and whsec_ secrets
    secrets.py         endpoint secrets encrypted at rest (AES-GCM)
    ssrf.py            which addresses a delivery may connect to, vetted per socket
    endpoints.py       endpoint and delivery rows; list_endpoints / list_deliveries
    delivery.py        the delivery loop: due rows → signed POSTs, retries, 410
    usage_events.py    usage.threshold and budget.exceeded, from the usage batch
    system_events.py   upstream.down/up and config.reload_failed
    routes.py          /api/webhooks*
    lifecycle.py       setup(app): hooks, tasks, teardown
"""
