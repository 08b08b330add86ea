"""Account pages: sign up, and the account page (quota, API tokens, language, theme).

Sign in/out and password change use Django's views.
"""
from datetime import timedelta

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import login
from django.contrib.auth.decorators import login_required
from django.http import Http404
from django.shortcuts import redirect, render
from django.utils.translation import gettext as _
from django.views.decorators.http import require_http_methods, require_POST

from generation.quota import quota_usage

from .forms import SignUpForm, TokenCreateForm
from .models import ApiToken
from .services import TokenLimitReached, token_create, token_revoke

# The clear text of a just-created token waits here for exactly one page render.
NEW_TOKEN_SESSION_KEY = "easel_new_api_token"


def signup(request):
    if not settings.EASEL_ALLOW_SIGNUP:
        raise Http404
    if request.user.is_authenticated:
        return redirect(settings.LOGIN_REDIRECT_URL)
    form = SignUpForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        user = form.save()
        if user is not None:
            login(request, user, backend="accounts.backends.UsernameOrEmailBackend")
            messages.success(request, _("Welcome to Easel, %(name)s.") % {"name": user.shown_name})
            return redirect(settings.LOGIN_REDIRECT_URL)
    return render(request, "accounts/signup.html", {"form": form})


@login_required
@require_http_methods(["GET", "POST"])
def me(request):
    """The account page. POST creates a token, then redirects (POST/redirect/GET) so
    the clear text is shown on the next render only, never again on a reload."""
    form = TokenCreateForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            token, clear = token_create(
                user=request.user, expiry=timedelta(days=form.cleaned_data["expiry_days"]),
                name=form.cleaned_data["name"],
            )
        except TokenLimitReached as exc:
            form.add_error(None, exc.message)
        else:
            request.session[NEW_TOKEN_SESSION_KEY] = {"name": token.label, "token": clear}
            return redirect("accounts:me")
    new_token = request.session.pop(NEW_TOKEN_SESSION_KEY, None)
    context = {
        "quota": quota_usage(user=request.user),
        "tokens": ApiToken.objects.filter(user=request.user).order_by("-created"),
        "token_form": form,
        "new_token": new_token,
    }
    response = render(request, "accounts/me.html", context)
    # The page may carry a secret: never stored by the browser's or anyone's cache.
    response["Cache-Control"] = "no-store"
    return response


@login_required
@require_POST
def token_revoke_view(request, token_key: str):
    if token_revoke(user=request.user, token_key=token_key):
        messages.success(request, _("The token is revoked; apps using it are signed out."))
    else:
        messages.error(request, _("No such token."))
    return redirect("accounts:me")
