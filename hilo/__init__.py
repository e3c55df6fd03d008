"""Hilo's shared kernel, the bottom layer every other package may import: settings, YAML config with
positions, logging, the one notifier, the claim loop of the durable workers, the database and its
migrations, passwords, and the web API layer (`hilo.web`: OpenAPI declarations, the one API, auth,
sessions, typed app keys). It imports no feature. The composition root is `server/`."""
