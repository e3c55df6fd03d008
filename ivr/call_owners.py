"""Acting on a call another worker owns. Each worker process (`hilo serve --workers N`) has the calls of its own
Stasis app in its LiveCalls; an API request for a call may reach any worker. The worker that took the request
asks every worker over Redis pub/sub (`<namespace>:calls:ask`); each answers on the asker's reply channel
whether it owns the call, and the owner carries the action out on its own channels and says how it went.

Bounded: the asker waits `wait_s` at most, and stops as soon as every worker that got the question (PUBLISH
says how many) has answered. No owner answering is `NotLive` (the API's 409), naming the wait."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from typing import Any

import redis.asyncio as aioredis

from asterisk.ari import AriClient, AriError
from ivr.live_calls import LiveCalls, NotLive

log = logging.getLogger(__name__)

OPS = ("agent", "hold", "unhold")


class OwnerFailed(RuntimeError):
    """The owner of the call answered, but could not carry the action out (its reason is the message)."""


class CallOwners:
    def __init__(
        self, redis: aioredis.Redis, namespace: str, worker: str, live: LiveCalls, *, wait_s: float = 2.0
    ) -> None:
        self.redis = redis
        self.live = live
        self.worker = worker  # this process's Stasis app: the name of its reply channel
        self.wait_s = wait_s
        self.ask_channel = f"{namespace}:calls:ask"
        self.reply_channel = f"{namespace}:calls:reply:{worker}"
        self._pending: dict[str, tuple[asyncio.Future[dict[str, Any]], list[dict[str, Any]], int]] = {}
        self._pubsub: Any = None
        self._task: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._pubsub = self.redis.pubsub()
        await self._pubsub.subscribe(self.ask_channel, self.reply_channel)
        self._task = asyncio.create_task(self._listen(), name=f"call-owners-{self.worker}")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for task in list(self._background):
            task.cancel()
        if self._pubsub is not None:
            with contextlib.suppress(Exception):
                await self._pubsub.aclose()

    # -- asking -----------------------------------------------------------------------------------
    async def agent(self, interaction_id: str) -> str:
        """The agent of the call, wherever it is live; NotLive if no worker has it."""
        return str((await self._ask("agent", interaction_id, ""))["agent"])

    async def hold(self, interaction_id: str, by: str) -> bool:
        return bool((await self._ask("hold", interaction_id, by))["changed"])

    async def unhold(self, interaction_id: str, by: str) -> bool:
        return bool((await self._ask("unhold", interaction_id, by))["changed"])

    async def _ask(self, op: str, interaction_id: str, by: str) -> dict[str, Any]:
        request = str(uuid.uuid4())
        done: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        replies: list[dict[str, Any]] = []
        self._pending[request] = (done, replies, 0)
        try:
            message = {"id": request, "op": op, "interaction": interaction_id, "by": by, "reply": self.reply_channel}
            listeners = int(await self.redis.publish(self.ask_channel, json.dumps(message)))
            self._pending[request] = (done, replies, listeners)
            if listeners and len(replies) >= listeners and not done.done():
                done.set_result({"here": False})
            try:
                answer = await asyncio.wait_for(asyncio.shield(done), self.wait_s)
            except TimeoutError:
                raise NotLive(
                    f"interaction {interaction_id} has no call with an agent on any worker that answered within "
                    f"{self.wait_s:g} s"
                ) from None
        finally:
            self._pending.pop(request, None)
        if not answer.get("here"):
            raise NotLive(f"interaction {interaction_id} has no call with an agent on any worker now")
        if "error" in answer:
            raise OwnerFailed(f"worker {answer.get('worker')}: {answer['error']}")
        return answer

    # -- answering --------------------------------------------------------------------------------
    async def _listen(self) -> None:
        while True:
            try:
                async for message in self._pubsub.listen():
                    if message.get("type") != "message":
                        continue
                    channel = message["channel"]
                    channel = channel.decode() if isinstance(channel, bytes) else channel
                    data = json.loads(message["data"])
                    if channel == self.reply_channel:
                        self._on_reply(data)
                    else:
                        task = asyncio.create_task(self._answer(data))
                        self._background.add(task)
                        task.add_done_callback(self._background.discard)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis gone for a moment: subscribe again
                log.warning("call owners' channel interrupted (%s); listening again", exc)
                await asyncio.sleep(1)

    def _on_reply(self, data: dict[str, Any]) -> None:
        pending = self._pending.get(str(data.get("id")))
        if pending is None:
            return
        done, replies, listeners = pending
        replies.append(data)
        if done.done():
            return
        if data.get("here"):
            done.set_result(data)
        elif listeners and len(replies) >= listeners:
            done.set_result({"here": False})

    async def _answer(self, data: dict[str, Any]) -> None:
        op, interaction_id = str(data.get("op")), str(data.get("interaction"))
        reply: dict[str, Any] = {"id": data.get("id"), "worker": self.worker, "here": True}
        try:
            call = self.live.get(interaction_id)
            if op == "agent":
                reply["agent"] = call.agent_id
            elif op in ("hold", "unhold"):
                change = self.live.hold if op == "hold" else self.live.unhold
                reply["changed"] = await change(interaction_id, str(data.get("by")))
            else:
                reply["error"] = f"unknown operation {op!r} (one of {', '.join(OPS)})"
        except NotLive:
            reply = {"id": data.get("id"), "worker": self.worker, "here": False}
        except AriError as exc:
            reply["error"] = str(exc)[:300]
        await self.redis.publish(str(data.get("reply")), json.dumps(reply))


async def tell_workers(ari: AriClient, namespace: str, workers: int) -> None:
    """Tell Asterisk's dialplan (context hilo-stasis) how many worker apps serve `namespace`: the global
    HILO_WORKERS_<namespace>, set at every connection (Asterisk forgets it when it restarts). One process
    empties it, so calls go to the app `namespace` itself again after a deployment of several workers."""
    value = str(workers) if workers > 1 else ""
    try:
        await ari.request(
            "POST", "/asterisk/variable", params={"variable": f"HILO_WORKERS_{namespace}", "value": value}
        )
    except (AriError, OSError, TimeoutError) as exc:  # the dialplan then keeps what it had; said, not fatal
        log.warning("could not tell Asterisk the number of workers (%d): %s", workers, exc)
