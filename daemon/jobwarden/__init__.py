"""jobwarden: watches a web application's background jobs through PostgreSQL."""

__version__ = "0.1.0"
