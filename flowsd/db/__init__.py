"""Database access: connection helpers, the embedded server and the SQL migrations."""
