"""All table models; importing this package registers every table on `Base.metadata`."""

from agenthub.models.agent import Agent, AgentHealth
from agenthub.models.audit import AuditEvent, AuditOutcome
from agenthub.models.base import Base, utcnow
from agenthub.models.channel import Channel, ChannelDefaultAgent, Platform
from agenthub.models.chat import Chat, ChatAgentLink, HandledBy, NeedsHumanReason
from agenthub.models.delivery import (
    AgentDelivery,
    AgentDeliveryStatus,
    DeliveryAttempt,
    OutboundSend,
    OutboundStatus,
)
from agenthub.models.message import DeliveryRank, DeliveryStatus, Message, SenderType
from agenthub.models.operator import (
    ActorType,
    CannedResponse,
    ChatEvent,
    ChatEventKind,
    ChatRead,
    Note,
)
from agenthub.models.token import ApiToken
from agenthub.models.user import ChannelMember, Role, User

__all__ = [
    "ActorType",
    "Agent",
    "AgentDelivery",
    "AgentDeliveryStatus",
    "AgentHealth",
    "ApiToken",
    "AuditEvent",
    "AuditOutcome",
    "Base",
    "CannedResponse",
    "Channel",
    "ChannelDefaultAgent",
    "ChannelMember",
    "Chat",
    "ChatAgentLink",
    "ChatEvent",
    "ChatEventKind",
    "ChatRead",
    "DeliveryAttempt",
    "DeliveryRank",
    "DeliveryStatus",
    "HandledBy",
    "Message",
    "NeedsHumanReason",
    "Note",
    "OutboundSend",
    "OutboundStatus",
    "Platform",
    "Role",
    "SenderType",
    "User",
    "utcnow",
]
