"""What the bot tells customers, and when: the one API the rest of the code calls to send a
message. Each function writes outbox rows (bot.infra.outbox) in the caller's transaction,
so a message exists exactly when the change that causes it is committed; the dispatcher
sends it (at once, when the serving process kicks it after the commit; else on its next
sweep).

Every function takes the session of the caller's transaction and `now` (aware). Texts come
from Jinja templates (bot/templates/notify, bot/templates/sms); template message ids and
fields from templates.toml (TEMPLATES_FILE).

Expiry (a message that can no longer help is not sent late):
- binding code SMS: with the code (BIND_CODE_TTL_SECONDS);
- customer-service text and late replies: with WeChat's 48-hour window after the user's
  last message;
- booking messages: when the service starts; tier changes: TIER_NOTICE_DAYS.

A package (its modules: config, booking_messages, reminders, channels, outbox_hooks,
privacy_export); `from bot.domain import notify` and `notify.<function>` are the API.
"""
from __future__ import annotations

from bot.domain.notify.booking_messages import booking_cancelled, booking_confirmed, booking_received
from bot.domain.notify.channels import binding_code, late_reply, mass_send, sms, text_message
from bot.domain.notify.config import (Config, Template, config, configure, load_templates,
                                      name_fields, template_body)
from bot.domain.notify.outbox_hooks import delivery_result, prepare
from bot.domain.notify.privacy_export import messages_for
from bot.domain.notify.reminders import confirm_attendance, drop_reminders, due_reminders, reminder

__all__ = ["Config", "Template", "binding_code", "booking_cancelled", "booking_confirmed",
           "booking_received", "config", "configure", "confirm_attendance", "delivery_result",
           "drop_reminders", "due_reminders", "late_reply", "load_templates", "mass_send",
           "messages_for", "name_fields", "prepare", "reminder", "sms", "template_body", "text_message"]
