"""Ways an upstream goes wrong on the wire, for ``guard.testing.fake_openai`` (``Reply(fault=...)``):
the fault-injecting mode that tests/test_upstream.py drives the guard with."""

from __future__ import annotations

import asyncio

from aiohttp import web

FAULTS = {
    "hang": "accept the request, never answer",
    "trickle": "send a valid answer one byte every trickle_s",
    "garbage": "answer 200 with an HTML page labelled application/json (streamed: 'data: 1' and noise)",
    "early_end": "streamed: some chunks, then a clean close without finish_reason or [DONE]; "
                 "not streamed: a JSON array instead of an object",
    "mid_close": "send part of the answer, then drop the connection",
    "short_body": "declare a Content-Length longer than the body sent, and keep the connection open",
}


async def fault_response(request: web.Request, reply, stream: bool) -> web.StreamResponse:
    """Go wrong on the wire as ``reply.fault`` says (see FAULTS)."""
    ok = ('{"id":"chatcmpl-fault","object":"chat.completion","created":1,"model":"fake-model","choices":[{"index":0,'
          '"message":{"role":"assistant","content":"slow but fine"},"finish_reason":"stop"}]}')
    chunk = ('data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,'
             '"delta":{"content":"partial "},"finish_reason":null}]}\n\n')
    ctype = "text/event-stream" if stream else "application/json"
    if reply.fault == "hang":
        await asyncio.sleep(3600)
    if reply.fault == "garbage":
        text = "data: 1\n\n" if stream else "<html><body><h1>502 Bad Gateway</h1></body></html>"
        return web.Response(text=text, status=200, content_type=ctype)
    if reply.fault == "early_end":
        return web.Response(text=chunk * 3 if stream else "[1, 2, 3]", status=200, content_type=ctype)
    body = (chunk * 3 + "data: [DONE]\n\n" if stream else ok).encode()
    resp = web.StreamResponse(status=200, headers={"content-type": ctype})
    if reply.fault == "short_body":
        resp.content_length = len(body) + 100
    await resp.prepare(request)
    if reply.fault == "trickle":
        for i in range(len(body)):
            await resp.write(body[i:i + 1])
            await asyncio.sleep(reply.trickle_s)
        await resp.write_eof()
        return resp
    await resp.write(body[: len(body) // 2])
    if reply.fault == "mid_close":
        request.transport.close()
        return resp
    await asyncio.sleep(3600)  # short_body: the rest never comes
    return resp

