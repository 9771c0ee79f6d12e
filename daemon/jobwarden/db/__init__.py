"""Database infrastructure: the pool, the embedded server, migrations, schema check."""
