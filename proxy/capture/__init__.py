"""Capture and replay: opt-in, redacted copies of request and response bodies.

    settings.py   the `capture:` config section, frozen (plans, caps, retention, redaction rules)
    jsonpath.py   the JSONPath subset the redaction rules use
    redact.py     the rules applied to bodies before anything is written
    draft.py      one request's capture while in flight (hot path: off costs a set lookup)
    record.py     Captured: the redacted, bounded bodies that ride with their usage row
    tables.py     tables (migration set "bluesminds.capture")
    writer.py     the usage recorder's batch hook (same transaction), total cap, retention sweep
    lifecycle.py  the hook and the periodic sweep in the app's life
    reads.py      a usage row and its capture
    replay.py     POST /api/usage/logs/{id}/replay (routes: proxy/routes/usage_routes.py)
"""
