"""The example agent behind `agenthub pingpong --a2a`: pingpong over A2A (JSON-RPC, streaming).

Built with the official `a2a-sdk` server classes: an `AgentExecutor`, the SDK's request handler
with an in-memory task store, and its Starlette routes for the agent card
(`/.well-known/agent-card.json`) and the JSON-RPC endpoint (`/`). Register it with the hub as
`{"transport": "a2a", "a2a": {"url": "http://127.0.0.1:<port>/"}}`. It answers:

- `pong: <the newest text it was sent>`, as a task whose artifact grows word by word (the hub
  shows it forming when it streams) and then completes;
- to `buttons`: a message asking "Ping or pong?" with two buttons (a data part
  `{"buttons": [...]}`), the tap comes back as `Ping` or `Pong` and is ponged;
- to `ask`: a task that needs input ("What is your name?"); the contact's next message
  continues that task, which completes with `pong: nice to meet you, <name>`;
- to `human`: a message with `{"handoff": true}` metadata: the hub hands the chat to a person.

Copy this file as the starting point of a real A2A agent.
"""

from __future__ import annotations

import asyncio
import logging

from a2a.helpers.proto_helpers import new_text_message
from a2a.server.agent_execution import AgentExecutor, RequestContext
from a2a.server.events import EventQueue
from a2a.server.request_handlers import DefaultRequestHandler
from a2a.server.routes import create_agent_card_routes, create_jsonrpc_routes
from a2a.server.tasks import InMemoryTaskStore, TaskUpdater
from a2a.types.a2a_pb2 import (
    AgentCapabilities,
    AgentCard,
    AgentInterface,
    AgentSkill,
    Part,
    Task,
    TaskState,
    TaskStatus,
)
from google.protobuf.struct_pb2 import Value  # type: ignore[import-untyped]
from starlette.applications import Starlette

from agenthub.pingpong import BUTTONS

log = logging.getLogger("agenthub.pingpong")
STEP_SECONDS = 0.05  # between two words of a streamed pong


def pong_card(url: str) -> AgentCard:
    return AgentCard(
        name="pingpong",
        description="Answers every message with `pong: <the message>` (Agent Hub's example).",
        version="1.0.0",
        supported_interfaces=[
            AgentInterface(url=url, protocol_binding="JSONRPC", protocol_version="1.0")
        ],
        capabilities=AgentCapabilities(streaming=True),
        default_input_modes=["text/plain"],
        default_output_modes=["text/plain"],
        skills=[
            AgentSkill(
                id="pong",
                name="pong",
                description="pong: <the message>; `buttons`, `ask` and `human` show more",
                tags=["example"],
                examples=["hi", "buttons", "ask", "human"],
            )
        ],
    )


class PongExecutor(AgentExecutor):
    async def execute(self, context: RequestContext, event_queue: EventQueue) -> None:
        text = _newest_text(context)
        log.info("%s -> %r", context.message.message_id if context.message else "?", text)
        task = context.current_task
        waiting = task is not None and task.status.state == TaskState.TASK_STATE_INPUT_REQUIRED
        if not waiting and text.strip().lower() == "buttons":
            message = new_text_message("Ping or pong?", context_id=context.context_id)
            data = Value()
            data.struct_value.update({"buttons": BUTTONS})
            message.parts.append(Part(data=data))
            await event_queue.enqueue_event(message)
            return
        if not waiting and text.strip().lower() == "human":
            message = new_text_message("Let me get a person.", context_id=context.context_id)
            message.metadata.update(
                {"handoff": True, "handoff_reason": "the contact asked for a human"}
            )
            await event_queue.enqueue_event(message)
            return
        task_id, context_id = str(context.task_id), str(context.context_id)
        if task is None:
            await event_queue.enqueue_event(
                Task(
                    id=task_id,
                    context_id=context_id,
                    status=TaskStatus(state=TaskState.TASK_STATE_SUBMITTED),
                    history=[context.message] if context.message else [],
                )
            )
        updater = TaskUpdater(event_queue, task_id, context_id)
        if not waiting and text.strip().lower() == "ask":
            question = new_text_message("What is your name?", context_id=context_id)
            await updater.requires_input(question)
            return
        await updater.start_work()
        pong = f"pong: nice to meet you, {text}" if waiting else f"pong: {text}"
        words = pong.split(" ")
        for n in range(1, len(words) + 1):
            # The same artifact, replaced by a longer text each time: streamed, the hub shows
            # it forming; not streamed, the task comes back with the whole text.
            await updater.add_artifact(
                [Part(text=" ".join(words[:n]))], artifact_id="pong", name="pong"
            )
            if n < len(words):
                await asyncio.sleep(STEP_SECONDS)
        await updater.complete()

    async def cancel(self, context: RequestContext, event_queue: EventQueue) -> None:
        updater = TaskUpdater(event_queue, str(context.task_id), str(context.context_id))
        await updater.cancel()


def _newest_text(context: RequestContext) -> str:
    """The last text part of the message (the hub sends one per new contact message)."""
    texts = [p.text for p in context.message.parts if p.text] if context.message else []
    return texts[-1] if texts else ""


def create_pingpong_a2a_app(url: str) -> Starlette:
    """The agent, its card naming `url` as its JSON-RPC endpoint."""
    card = pong_card(url)
    handler = DefaultRequestHandler(
        agent_executor=PongExecutor(), task_store=InMemoryTaskStore(), agent_card=card
    )
    routes = create_agent_card_routes(card) + create_jsonrpc_routes(handler, rpc_url="/")
    return Starlette(routes=routes)


def serve(port: int) -> None:
    import uvicorn

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    app = create_pingpong_a2a_app(f"http://127.0.0.1:{port}/")
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")
