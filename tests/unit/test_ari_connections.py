"""The ARI client's REST requests share a bounded pool of connections (asterisk/ari.py ARI_CONNECTIONS): a
burst waits for a free one rather than opening more than Asterisk's HTTP server may accept, and a pooled
connection is let go before Asterisk closes it as idle."""

import asyncio
import contextlib

from aiohttp import web
from aiohttp.test_utils import TestServer

from asterisk.ari import ARI_CONNECTIONS, ARI_KEEPALIVE_S, AriClient

ASTERISK_KEEP_ALIVE_S = 15.0  # http.conf session_keep_alive's default


async def test_a_burst_of_requests_opens_at_most_the_pool_s_connections() -> None:
    burst = ARI_CONNECTIONS + 8
    peers: set[object] = set()
    arrived = 0
    all_arrived, release = asyncio.Event(), asyncio.Event()

    async def answer(request: web.Request) -> web.Response:
        nonlocal arrived
        peers.add(request.transport.get_extra_info("peername") if request.transport else None)
        arrived += 1
        if arrived == burst:
            all_arrived.set()
        await release.wait()
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/ari/channels/{id}/answer", answer)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    client = AriClient(str(server.make_url("/ari")), "u", "p", "hilo")
    await client.start()
    assert client._task is not None
    client._task.cancel()  # REST only: no events socket in this test
    try:
        requests = asyncio.gather(*(client.answer(f"c{i}") for i in range(burst)))
        # Unbounded, the whole burst would be in flight at once; bounded, the rest wait for a connection.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(all_arrived.wait(), 1.0)
        assert arrived == ARI_CONNECTIONS
        release.set()
        await asyncio.wait_for(requests, 5)
        assert arrived == burst and len(peers) == ARI_CONNECTIONS
    finally:
        release.set()
        await client.close()
        await server.close()


def test_a_pooled_connection_is_let_go_before_asterisk_closes_it() -> None:
    assert ARI_KEEPALIVE_S < ASTERISK_KEEP_ALIVE_S
