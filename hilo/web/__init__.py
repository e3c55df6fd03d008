"""The web API layer of the kernel: route declarations that validate input and build the OpenAPI document
(openapi.py), the one API gathered from every feature's table (api.py), who is calling (auth.py,
sessions.py) and the typed app keys of the kernel's resources (keys.py)."""
