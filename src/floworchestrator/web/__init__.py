"""The web layer: Starlette apps and routes to mount into the host application.

Needs the ``web`` extra (``pip install 'floworchestrator[web]'``). So far it
holds the webhook receiver (:mod:`floworchestrator.web.webhooks`).
"""

try:
    import starlette  # noqa: F401  (fail early, with the fix in the message)
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError("floworchestrator.web needs Starlette: pip install 'floworchestrator[web]'") from exc

from .webhooks import (
    DEFAULT_MAX_BODY_SIZE,
    DEFAULT_PATH,
    DROPPED_HEADERS,
    WebhookReceiver,
    WebhookTarget,
    create_webhook_app,
    find_webhook,
    trigger_headers,
    webhook_routes,
)

__all__ = [
    "DEFAULT_MAX_BODY_SIZE",
    "DEFAULT_PATH",
    "DROPPED_HEADERS",
    "WebhookReceiver",
    "WebhookTarget",
    "create_webhook_app",
    "find_webhook",
    "trigger_headers",
    "webhook_routes",
]
