"""Staff chat commands (#…). Only openids registered with `staff add` reach them."""
from __future__ import annotations

from bot.conversation import Arg, Context, Reply, Router
from bot.domain.vocab import STAFF_ROLES, Role

router = Router()

# Commands whose features belong to later work: listed honestly as coming soon.
_PENDING = [
    ("#确认", ("预约号", "YYYY-MM-DD", "HH:MM", "机构名称")),
    ("#完成", ("预约号",)),
    ("#爽约", ("预约号",)),
    ("#预约", ("状态",)),
    ("#查询", ("手机号|保单号",)),
    ("#群发", ("层级…|全部", "内容")),
    ("#确认群发", ()),
]


def _not_yet(ctx: Context, **_) -> Reply:
    return ctx.say("staff/not_yet")


for _name, _args in _PENDING:
    router.command(_name, *(Arg(a, optional=True, rest=i == len(_args) - 1)
                            for i, a in enumerate(_args)),
                   roles=(Role.ADMIN,) if "群发" in _name else STAFF_ROLES)(_not_yet)


@router.command("#帮助")
def staff_help(ctx: Context) -> Reply:
    commands = [(c.usage, c.handler is not _not_yet) for c in ctx.router.commands.values()
                if ctx.staff.role in c.roles]
    return ctx.say("staff/help", commands=commands)
