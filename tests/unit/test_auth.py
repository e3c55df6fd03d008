from hilo.web.auth import TokenAuth


def test_roles_by_token() -> None:
    auth = TokenAuth({"admin-token-123": "admin", "": "admin"})
    assert auth.role_of("Bearer admin-token-123") == "admin"
    assert auth.role_of("Bearer wrong") is None
    assert auth.role_of("admin-token-123") is None  # scheme required
    assert auth.role_of("Bearer ") is None  # an empty configured token never matches
    assert auth.role_of(None) is None
