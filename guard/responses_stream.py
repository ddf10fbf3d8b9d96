"""Responses API streams: the chat chunks that guard.streaming released, as Responses events.

The hold-back contract is the chat stream's own: this module only re-shapes what was released,
so no text reaches the client before a check allowed it. Events follow the Responses API's order
(``response.created``, ``response.output_item.added``, ``response.content_part.added``, deltas,
the ``*.done`` events, then ``response.completed``); a refusal ends the message with a ``refusal``
content part and the stream with ``response.incomplete`` (``incomplete_details.reason:
"content_filter"``) carrying the ``guard`` object.
"""

from __future__ import annotations

from typing import Any

from guard.responses import (ResponsesRequest, function_item, message_item, new_id, output_text, reasoning_of,
                             shell)
from guard.streaming import chunk_text


class ResponsesStream:
    """Turns the chat chunks guard.streaming released into Responses events, in order: one output
    item open at a time (text, a function call, or judged reasoning), closed when the next begins.
    The guard's own chunks (they carry ``guard``) end the stream with the refusal or the rewrite.
    ``present`` turns the guard's info into the object the client sees."""

    def __init__(self, req: ResponsesRequest, rid: str, present: Any = None):
        self.req, self.rid, self.present = req, rid, present or (lambda info: info)
        self.model, self.usage, self.finish_reason = req.model, None, None
        self.seq = 0
        self.output: list[dict[str, Any]] = []  # closed items
        self.item: dict[str, Any] | None = None  # the open item
        self.ended = False

    def _ev(self, type_: str, **fields: Any) -> dict[str, Any]:
        self.seq += 1
        return {"type": type_, "sequence_number": self.seq - 1, **fields}

    def _snapshot(self, status: str, guard: dict[str, Any] | None = None) -> dict[str, Any]:
        return shell(self.req, self.rid, self.model, status, list(self.output), self.usage, guard)

    def start(self) -> list[dict[str, Any]]:
        snap = self._snapshot("in_progress")
        return [self._ev("response.created", response=snap), self._ev("response.in_progress", response=snap)]

    def feed(self, batch: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if any("guard" in c for c in batch):
            return self._replacement(batch)
        events: list[dict[str, Any]] = []
        for c in batch:
            self.model = c.get("model") or self.model
            self.usage = c.get("usage") or self.usage
            for choice in c.get("choices") or []:
                if choice.get("index", 0) != 0:
                    continue  # one output per response: the first choice
                d = choice.get("delta") or {}
                thought = reasoning_of(d)
                if thought and thought in chunk_text(c):  # only reasoning the output stage judged
                    events += self._delta("reasoning", thought)
                if isinstance(d.get("content"), str) and d["content"]:
                    events += self._delta("message", d["content"])
                for call in d.get("tool_calls") or []:
                    events += self._call(call)
                self.finish_reason = choice.get("finish_reason") or self.finish_reason
        return events

    def finish(self) -> list[dict[str, Any]]:
        if self.ended:
            return []
        self.ended = True
        events = self._close()
        status = "incomplete" if self.finish_reason == "length" else "completed"
        return events + [self._ev(f"response.{status}", response=self._snapshot(status))]

    def failed(self, message: str) -> list[dict[str, Any]]:
        self.ended = True
        snap = self._snapshot("failed")
        snap["error"] = {"code": "server_error", "message": message}
        return [self._ev("response.failed", response=snap)]

    # ------------------------------------------------------------------ items

    def _open(self, kind: str, **item: Any) -> list[dict[str, Any]]:
        events = self._close()
        prefix = {"message": "msg", "call": "fc", "reasoning": "rs"}[kind]
        self.item = {"kind": kind, "id": new_id(prefix), "index": len(self.output), "text": "", **item}
        it = self.item
        if kind == "message":
            return events + [self._ev("response.output_item.added", output_index=it["index"],
                                      item=message_item(it["id"], [], "in_progress")),
                             self._ev("response.content_part.added", item_id=it["id"], output_index=it["index"],
                                      content_index=0, part=output_text(""))]
        if kind == "reasoning":
            return events + [self._ev("response.output_item.added", output_index=it["index"],
                                      item={"type": "reasoning", "id": it["id"], "summary": []}),
                             self._ev("response.reasoning_summary_part.added", item_id=it["id"],
                                      output_index=it["index"], summary_index=0, part={"type": "summary_text", "text": ""})]
        return events + [self._ev("response.output_item.added", output_index=it["index"],
                                  item=function_item(it["id"], it["call_id"], it["name"], "", "in_progress"))]

    def _delta(self, kind: str, text: str) -> list[dict[str, Any]]:
        events = self._open(kind) if self.item is None or self.item["kind"] != kind else []
        it = self.item
        it["text"] += text
        where = {"item_id": it["id"], "output_index": it["index"]}
        if kind == "message":
            return events + [self._ev("response.output_text.delta", **where, content_index=0, delta=text, logprobs=[])]
        return events + [self._ev("response.reasoning_summary_text.delta", **where, summary_index=0, delta=text)]

    def _call(self, call: dict[str, Any]) -> list[dict[str, Any]]:
        fn = call.get("function") or {}
        events: list[dict[str, Any]] = []
        if self.item is None or self.item["kind"] != "call" or self.item["chat_index"] != call.get("index", 0):
            events = self._open("call", chat_index=call.get("index", 0), call_id=call.get("id") or new_id("call"),
                                name=fn.get("name") or "")
        args = fn.get("arguments") or ""
        if not args:
            return events
        self.item["text"] += args
        return events + [self._ev("response.function_call_arguments.delta", item_id=self.item["id"],
                                  output_index=self.item["index"], delta=args)]

    def _close(self, status: str = "completed", extra_parts: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
        it, self.item = self.item, None
        if it is None:
            return []
        where = {"item_id": it["id"], "output_index": it["index"]}
        if it["kind"] == "message":
            part = output_text(it["text"])
            item = message_item(it["id"], [part, *(extra_parts or [])], status)
            events = [self._ev("response.output_text.done", **where, content_index=0, text=it["text"], logprobs=[]),
                      self._ev("response.content_part.done", **where, content_index=0, part=part)]
        elif it["kind"] == "reasoning":
            item = {"type": "reasoning", "id": it["id"], "summary": [{"type": "summary_text", "text": it["text"]}]}
            events = [self._ev("response.reasoning_summary_text.done", **where, summary_index=0, text=it["text"]),
                      self._ev("response.reasoning_summary_part.done", **where, summary_index=0,
                               part=item["summary"][0])]
        else:
            item = function_item(it["id"], it["call_id"], it["name"], it["text"], status)
            events = [self._ev("response.function_call_arguments.done", **where, arguments=it["text"])]
        self.output.append(item)
        return events + [self._ev("response.output_item.done", output_index=it["index"], item=item)]

    # ------------------------------------------------------------------ the guard's replacement

    def _replacement(self, batch: list[dict[str, Any]]) -> list[dict[str, Any]]:
        info = self.present(next(c["guard"] for c in batch if "guard" in c))
        text = "".join((ch.get("delta") or {}).get("content") or "" for c in batch if "guard" not in c
                       for ch in c.get("choices") or [])
        self.ended = True
        if info.get("decision") != "refuse":  # a safe completion: the rewrite, as text
            events = self._delta("message", text) + self._close()
            return events + [self._ev("response.completed", response=self._snapshot("completed", info))]
        refusal = text.lstrip("\n")
        it = self.item
        kept = it is not None and it["kind"] == "message"  # an open message has text: allowed, sent, it stays
        events: list[dict[str, Any]] = []
        if kept:
            where = {"item_id": it["id"], "output_index": it["index"]}
            events += [self._ev("response.output_text.done", **where, content_index=0, text=it["text"], logprobs=[]),
                       self._ev("response.content_part.done", **where, content_index=0, part=output_text(it["text"]))]
        else:
            events += self._close("incomplete")  # a function call cut short, or nothing open
            it = {"kind": "message", "id": new_id("msg"), "index": len(self.output), "text": ""}
            events.append(self._ev("response.output_item.added", output_index=it["index"],
                                   item=message_item(it["id"], [], "in_progress")))
        where = {"item_id": it["id"], "output_index": it["index"]}
        ci = 1 if kept else 0
        part = {"type": "refusal", "refusal": refusal}
        events += [self._ev("response.content_part.added", **where, content_index=ci, part={"type": "refusal", "refusal": ""}),
                   self._ev("response.refusal.delta", **where, content_index=ci, delta=refusal),
                   self._ev("response.refusal.done", **where, content_index=ci, refusal=refusal),
                   self._ev("response.content_part.done", **where, content_index=ci, part=part)]
        self.item = None
        item = message_item(it["id"], ([output_text(it["text"])] if ci else []) + [part], "incomplete")
        self.output.append(item)
        events.append(self._ev("response.output_item.done", output_index=it["index"], item=item))
        return events + [self._ev("response.incomplete", response=self._snapshot("incomplete", info))]
