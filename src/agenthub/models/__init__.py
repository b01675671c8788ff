"""All table models; importing this package registers every table on `Base.metadata`."""

from agenthub.models.agent import Agent
from agenthub.models.base import Base, utcnow
from agenthub.models.channel import Channel, ChannelDefaultAgent, Platform
from agenthub.models.chat import Chat, ChatAgentLink
from agenthub.models.delivery import (
    AgentDelivery,
    AgentDeliveryStatus,
    DeliveryAttempt,
    OutboundSend,
    OutboundStatus,
)
from agenthub.models.message import DeliveryRank, DeliveryStatus, Message, SenderType
from agenthub.models.token import ApiToken
from agenthub.models.user import ChannelMember, Role, User

__all__ = [
    "Agent",
    "AgentDelivery",
    "AgentDeliveryStatus",
    "ApiToken",
    "Base",
    "Channel",
    "ChannelDefaultAgent",
    "ChannelMember",
    "Chat",
    "ChatAgentLink",
    "DeliveryAttempt",
    "DeliveryRank",
    "DeliveryStatus",
    "Message",
    "OutboundSend",
    "OutboundStatus",
    "Platform",
    "Role",
    "SenderType",
    "User",
    "utcnow",
]
