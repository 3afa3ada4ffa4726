"""The conversation framework: router, context, flows, intents, stores and the pipeline.
Handlers import what they need from here."""
from bot.conversation.context import Context
from bot.conversation.flow import Choice, Flow, FlowData, Option, Step
from bot.conversation.reply import Invalid, Reply
from bot.conversation.router import Arg, Router

__all__ = ["Arg", "Choice", "Context", "Flow", "FlowData", "Invalid", "Option", "Reply",
           "Router", "Step"]
