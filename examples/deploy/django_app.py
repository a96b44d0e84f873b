"""Django (ASGI), guarded by wrapping the ASGI application; a view reads the decision at
``request.scope["state"]["guardrail"]``. Django's MIDDLEWARE setting is Django's own kind of
middleware: guardrail goes around the application instead. Settings are inline to keep the
example one file; a project keeps them in settings.py and this in asgi.py."""

import os

from django.conf import settings

settings.configure(
    ROOT_URLCONF=__name__,
    ALLOWED_HOSTS=["*"],
    SECRET_KEY=os.environ.get("DJANGO_SECRET_KEY", "example-only"),
    MIDDLEWARE=[],
)

from django.core.asgi import get_asgi_application  # noqa: E402  (after settings)
from django.http import HttpRequest, HttpResponse, JsonResponse  # noqa: E402
from django.urls import path  # noqa: E402
from django.views.decorators.csrf import csrf_exempt  # noqa: E402

from guardrail import Guardrail  # noqa: E402

POLICY = os.environ.get("GUARDRAIL_POLICY", "policy.yaml")


@csrf_exempt
def chat(request: HttpRequest) -> JsonResponse:
    decision = request.scope["state"]["guardrail"]
    return JsonResponse({"route": decision.route, "action": decision.action})


def health(request: HttpRequest) -> HttpResponse:
    return HttpResponse("ok")


urlpatterns = [path("v1/chat/completions", chat), path("healthz", health)]

application = Guardrail(get_asgi_application(), policy=POLICY)
