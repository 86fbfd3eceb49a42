"""The web layer: Starlette apps and routes to mount into the host application.

Needs the ``web`` extra (``pip install 'floworchestrator[web]'``).
:func:`create_app` serves the JSON API (:mod:`floworchestrator.web.api`) and
the webhook receiver (:mod:`floworchestrator.web.webhooks`) behind the
authentication of :mod:`floworchestrator.web.auth`.
"""

try:
    import starlette  # noqa: F401  (fail early, with the fix in the message)
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError("floworchestrator.web needs Starlette: pip install 'floworchestrator[web]'") from exc

from .app import create_app
from .auth import AuthHook, BasicAuth, BearerAuth, NoAuth
from .events import close_event_streams
from .mermaid import to_mermaid
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
    "AuthHook",
    "BasicAuth",
    "BearerAuth",
    "NoAuth",
    "WebhookReceiver",
    "WebhookTarget",
    "close_event_streams",
    "create_app",
    "create_webhook_app",
    "find_webhook",
    "to_mermaid",
    "trigger_headers",
    "webhook_routes",
]
