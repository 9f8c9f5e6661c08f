"""Dial plans: number normalization and call routing (see gateway.dialplan.plan)."""

from gateway.dialplan.plan import (
    Action,
    Decision,
    DialPlan,
    InboundRule,
    NormalizeRule,
    OutboundRoute,
    parse_template,
)

__all__ = [
    "Action",
    "Decision",
    "DialPlan",
    "InboundRule",
    "NormalizeRule",
    "OutboundRoute",
    "parse_template",
]
