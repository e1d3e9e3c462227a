"""QuirkScope database: SQLAlchemy models, sessions, migrations and the artifact store."""
