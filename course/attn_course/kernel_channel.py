"""The grading process's channel to the agent in a running kernel (``attn_course.judge``)."""

from __future__ import annotations

import queue
import time
import uuid

from jupyter_client.blocking.client import BlockingKernelClient
from jupyter_core.utils import run_sync

from attn_grader import agent as wire
from attn_grader import remote

#: How long the kernel gets to answer after an interrupt before it is declared gone.
_GRACE_S = 10.0


class KernelChannel(remote.Channel):
    """Requests to the agent in a running kernel, as comm messages on its shell channel
    (binary buffers carry the tensors); replies come on iopub. A second client of the same
    kernel, so nbclient's own client is left as it is."""

    def __init__(self, km, timeout: float):
        super().__init__()
        self.km, self.timeout = km, timeout
        self.kc = BlockingKernelClient()
        self.kc.load_connection_info(km.get_connection_info(session=False))
        self.kc.start_channels(hb=False)
        self.kc.wait_for_ready(timeout=min(timeout, 60))
        self.comm_id = uuid.uuid4().hex
        self._send("comm_open", {"comm_id": self.comm_id, "target_name": wire.COMM_TARGET,
                                 "data": {}})
        hello = self.request("hello")
        if hello.get("protocol") != wire.PROTOCOL:
            raise remote.ChannelBroken("the kernel's grading agent speaks another protocol")

    def _send(self, msg_type: str, content: dict, buffers=None) -> None:
        msg = self.kc.session.msg(msg_type, content)
        self.kc.session.send(self.kc.shell_channel.socket, msg, buffers=buffers)

    def _alive(self) -> bool:
        try:
            return bool(run_sync(self.km.is_alive)())
        except Exception:
            return False

    def exchange(self, header: dict, blob: bytes) -> tuple[dict, bytes]:
        rid = uuid.uuid4().hex
        self._send("comm_msg", {"comm_id": self.comm_id, "data": {**header, "id": rid}},
                   buffers=[blob] if blob else None)
        deadline = time.monotonic() + self.timeout
        interrupted = False
        while True:
            try:
                msg = self.kc.get_iopub_msg(timeout=1.0)
            except queue.Empty:
                if not self._alive():
                    raise remote.ChannelBroken("the kernel died") from None
                now = time.monotonic()
                if now < deadline:
                    continue
                if interrupted:
                    raise remote.ChannelBroken(
                        "the kernel did not answer, even after an interrupt") from None
                run_sync(self.km.interrupt_kernel)()
                interrupted, deadline = True, now + _GRACE_S
                continue
            content = msg.get("content", {})
            if msg.get("msg_type") != "comm_msg" or content.get("comm_id") != self.comm_id:
                continue
            data = content.get("data")
            if type(data) is not dict or data.get("id") != rid:
                continue
            buffers = msg.get("buffers") or [b""]
            reply = dict(data)
            if interrupted and not reply.get("ok"):
                reply["error"] = {"type": "KeyboardInterrupt",
                                  "message": f"did not finish within {self.timeout:g} s "
                                             "(an endless loop?)"}
            return reply, bytes(buffers[0])

    def close(self) -> None:
        try:
            self._send("comm_close", {"comm_id": self.comm_id, "data": {}})
        finally:
            self.kc.stop_channels()
