"""Authentication: passwords, browser sessions, API tokens, CSRF and role checks."""
