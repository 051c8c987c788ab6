"""The schema of the gateway: every migration set, listed here and nowhere else.

Sets apply in this order on `Database.open()`; each records what it applied
under its own name, so a set added to the list later applies on the next
start without touching the others. Listing them here, rather than letting a
module register itself when imported, means a database opened by the CLI has
the same tables as one opened by the server, whatever happened to be imported.
"""

from __future__ import annotations

import sqlite_utils

STORE = sqlite_utils.Migrations("bluesminds.store")


@STORE(name="001_idempotency_keys")
def _idempotency_keys(db: sqlite_utils.Database) -> None:
    # One row per committed `write_once`: the record that an effect happened,
    # written in the same transaction as the effect, so a replay is a no-op.
    db.execute("CREATE TABLE idempotency_keys (key TEXT PRIMARY KEY) WITHOUT ROWID")


def gateway_migrations() -> tuple[sqlite_utils.Migrations, ...]:
    # Imported here, not at the top: the feature packages import the store.
    from ..auth.tables import migrations as auth
    from ..billing.tables import migrations as billing
    from ..cache.tables import migrations as cache
    from ..gateway.response_ids import migrations as responses
    from ..usage.schema import migrations as usage
    from ..webhooks.outbox import migrations as webhooks
    from ..capture.tables import migrations as capture  # after auth and usage: it adds columns to both

    return (STORE, auth, usage, webhooks, responses, billing, capture, cache)
