"""The login view (throttled, and switching accounts) and the sign-up throttle.

Django's ``LoginView(redirect_authenticated_user=True)`` redirects a logged-in
browser before it looks at the form, so submitting another account's password
kept the old account. Here only a GET (or HEAD) is redirected; a POST is
always checked, and ``django.contrib.auth.login`` flushes the old session
when the password was another account's.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from django.contrib.auth import views as auth_views
from django.contrib.auth.forms import AuthenticationForm
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from chat import throttle

TOO_MANY_REQUESTS = 429


class LoginView(auth_views.LoginView):
    redirect_authenticated_user = True

    def setup(self, request: HttpRequest, *args: Any, **kwargs: Any) -> None:
        super().setup(request, *args, **kwargs)
        # A POST carries credentials: check them even when someone is logged in.
        self.redirect_authenticated_user = request.method in ("GET", "HEAD")

    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        username = request.POST.get("username", "")
        refusal = throttle.login_refusal(request, username) if username else None
        if refusal is not None:
            return self._throttled(refusal)
        return super().post(request, *args, **kwargs)

    def form_invalid(self, form: AuthenticationForm) -> HttpResponse:
        # The throttle backend refused the attempt itself (a concurrent failure crossed the limit after post() checked).
        refusal = throttle.refused_by_backend(self.request)
        if refusal is not None:
            return self._throttled(refusal, form)
        return super().form_invalid(form)

    def _throttled(self, refusal: throttle.Refusal, form: AuthenticationForm | None = None) -> HttpResponse:
        form = form or self.get_form_class()(self.request, initial={"username": self.request.POST.get("username", "")})
        context = self.get_context_data(form=form, throttled=refusal.message())
        response = self.render_to_response(context, status=TOO_MANY_REQUESTS)
        response["Retry-After"] = str(refusal.retry_after)
        return response


def signup_throttled(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """Count every sign-up POST per address; past ``KAIWA_SIGNUP_PER_ADDRESS`` in the window, answer 429."""

    @wraps(view)
    def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if request.method == "POST":
            refusal = throttle.signup_refusal(request)
            if refusal is not None:
                response = render(
                    request,
                    "registration/throttled.html",
                    {"message": refusal.message("sign up"), "title": "Too many sign-ups"},
                    status=TOO_MANY_REQUESTS,
                )
                response["Retry-After"] = str(refusal.retry_after)
                return response
            throttle.signup_attempted(request)
        return view(request, *args, **kwargs)

    return wrapped
