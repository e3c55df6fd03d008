import io
import logging
import stat
from collections.abc import Callable
from pathlib import Path

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from pydantic import SecretStr

from hilo.logs import RedactingFilter, mask_pii, setup_logging
from hilo.settings import Settings
from server.cli import _secrets


def test_phone_numbers_keep_only_last_three_digits() -> None:
    assert mask_pii("call from +34 911 22 23 33 ended") == "call from +********333 ended"
    assert mask_pii("caller 0034911222333") == "caller **********333"


def test_emails_are_masked() -> None:
    assert mask_pii("mail ana.garcia@example.com") == "mail a***@example.com"


def test_ids_and_short_numbers_are_left_alone() -> None:
    text = "interaction 3f2a-11 queue 2 port 5060 channel sim-1f0e2a"
    assert mask_pii(text) == text


def test_filter_masks_args_and_secrets() -> None:
    record = logging.LogRecord(
        "x", logging.INFO, __file__, 1, "caller %s token %s", ("+34911222333", "s3cr3t-t0k3n"), None
    )
    RedactingFilter(["s3cr3t-t0k3n"]).filter(record)
    assert record.getMessage() == "caller +********333 token [secret]"


def test_encoded_dialled_and_bracketed_numbers_are_masked() -> None:
    assert mask_pii("GET /api/customers?phone=%2B34911222333 200") == "GET /api/customers?phone=%2B********333 200"
    assert mask_pii("channel Local/34600111222@hilo-callback-0000001;1") == (
        "channel Local/********222@hilo-callback-0000001;1"
    )
    assert mask_pii("dial PJSIP/+447700900123@carrier-sim and tel:+34911222333") == (
        "dial PJSIP/+*********123@carrier-sim and tel:+********333"
    )
    assert mask_pii("from +1 (415) 555-0100 ok") == "from +********100 ok"


def _written(secrets: list[str], emit: Callable[[logging.Logger], None]) -> str:
    out = io.StringIO()
    setup_logging(secrets=secrets, stream=out)
    try:
        emit(logging.getLogger("hilo.test"))
    finally:
        logging.getLogger().handlers.clear()
    return out.getvalue()


def test_tracebacks_are_masked_like_messages() -> None:
    def emit(log: logging.Logger) -> None:
        try:
            raise RuntimeError("customer +34600111222 ana@example.com token s3cr3t-token-value")
        except RuntimeError:
            log.exception("failed for %s", "+34600111222")
        try:
            raise ValueError("Key (kind, value)=(phone, +34600111222) already exists")
        except ValueError as exc:
            log.warning("insert failed", exc_info=exc)
        log.info("where", stack_info=True, extra={"ignored": "s3cr3t-token-value"})

    text = _written(["s3cr3t-token-value"], emit)
    assert "Traceback" in text and "RuntimeError: customer" in text and "ValueError: Key (kind, value)" in text
    assert "600111222" not in text and "ana@example.com" not in text and "s3cr3t-token-value" not in text
    assert "+********222" in text and "a***@example.com" in text and "[secret]" in text


def test_a_secret_is_masked_url_encoded_too() -> None:
    text = _written(["p@ss/w0rd+x"], lambda log: log.error("connect to redis://:p%40ss%2Fw0rd%2Bx@host failed"))
    assert "w0rd" not in text and "redis://:[secret]@host" in text


async def test_aiohttp_error_handling_request_is_masked() -> None:
    async def broken(request: web.Request) -> web.Response:
        raise RuntimeError(f"no customer for {request.query['phone']}")

    out = io.StringIO()
    setup_logging(secrets=[], stream=out)
    try:
        app = web.Application()
        app.router.add_get("/broken", broken)
        async with TestClient(TestServer(app)) as client:
            resp = await client.get("/broken", params={"phone": "+34600111222"})
            assert resp.status == 500
    finally:
        logging.getLogger().handlers.clear()
    text = out.getvalue()
    assert "Error handling request" in text and "RuntimeError: no customer for +********222" in text
    assert "600111222" not in text


def test_the_log_file_is_not_world_readable(tmp_path: Path) -> None:
    path = tmp_path / "hilo.log"
    path.touch()
    path.chmod(0o644)  # as a shell's `>> hilo.log` under umask 022 makes it
    with path.open("a") as stream:
        setup_logging(stream=stream)
        try:
            logging.getLogger("hilo.test").warning("started")
        finally:
            logging.getLogger().handlers.clear()
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert "started" in path.read_text()


def test_the_server_masks_its_connection_passwords_and_tokens() -> None:
    settings = Settings(
        database_url=SecretStr("postgresql://hilo:pg-pass-456@127.0.0.1:5432/hilo"),
        redis_url=SecretStr("redis://:redis-pass-123@127.0.0.1:6379/0"),
        metrics_token=SecretStr("scrape-token-789"),
        secret_pepper=SecretStr("pepper-of-the-pins-0123"),
        secret_pepper_previous=SecretStr("older-pepper-4567890, oldest-pepper-98765432"),
    )
    found = set(_secrets(settings))
    assert {"pg-pass-456", "redis-pass-123", "redis://:redis-pass-123@127.0.0.1:6379/0", "scrape-token-789"} <= found
    assert {"pepper-of-the-pins-0123", "older-pepper-4567890", "oldest-pepper-98765432"} <= found
