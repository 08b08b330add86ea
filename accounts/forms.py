"""Sign-up form: the page's face of `user_create`; the sign-in forms of the page and the
admin (with the lockout the API has); the admin's password form."""
import math

from django import forms
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth.forms import AdminPasswordChangeForm, AuthenticationForm, SetUnusablePasswordMixin
from django.contrib.auth.password_validation import password_validators_help_text_html
from django.core.exceptions import ValidationError
from django.utils.text import format_lazy
from django.utils.translation import gettext_lazy as _, ngettext

from .lockout import client_ip, login_failure_record, login_failures_clear, login_locked_for
from .services import user_create


class LockoutMixin:
    """The lockout of accounts.lockout on a Django sign-in form: refused while locked out
    (even with the right password, and without checking it), a wrong password counted,
    a right one clearing the count."""

    def clean(self):
        username, password = self.cleaned_data.get("username"), self.cleaned_data.get("password")
        if not username or not password:
            return super().clean()
        ip = client_ip(self.request)
        wait = login_locked_for(username=username, ip=ip)
        if wait:
            minutes = math.ceil(wait / 60)
            raise ValidationError(
                ngettext(
                    "Too many failed sign-in attempts for this account. Try again in %(n)d minute.",
                    "Too many failed sign-in attempts for this account. Try again in %(n)d minutes.",
                    minutes,
                ) % {"n": minutes},
                code="locked_out",
            )
        try:
            cleaned = super().clean()
        except ValidationError:
            # Only a wrong password counts: the admin refuses a right one of an account
            # that is not staff with the same words, which is no guess.
            if self.user_cache is None:
                login_failure_record(username=username, ip=ip)
            raise
        login_failures_clear(username=username, ip=ip)
        return cleaned


class SignInForm(LockoutMixin, AuthenticationForm):
    """The sign-in page's form."""


class AdminSignInForm(LockoutMixin, AdminAuthenticationForm):
    """The admin's login form (staff only, as Django's)."""


class SignUpForm(forms.Form):
    username = forms.CharField(label=_("Username"), max_length=150)
    email = forms.EmailField(label=_("E-mail (optional)"), required=False)
    display_name = forms.CharField(label=_("Display name (optional)"), max_length=150, required=False)
    password1 = forms.CharField(label=_("Password"), widget=forms.PasswordInput, strip=False)
    password2 = forms.CharField(label=_("Password again"), widget=forms.PasswordInput, strip=False)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # The rules the password must follow, from the validators that will judge it,
        # shown before the first try (built per form: in the reader's language).
        self.fields["password1"].help_text = password_validators_help_text_html()

    def clean(self):
        data = super().clean()
        if data.get("password1") and data.get("password1") != data.get("password2"):
            self.add_error("password2", _("The two passwords differ."))
        return data

    def save(self):
        data = self.cleaned_data
        try:
            return user_create(
                username=data["username"],
                password=data["password1"],
                email=data.get("email", ""),
                display_name=data.get("display_name", ""),
            )
        except ValidationError as exc:
            for field, messages in exc.message_dict.items():
                self.add_error("password1" if field == "password" else field, messages)
            return None


class TokenCreateForm(forms.Form):
    """A new API token: a name to recognise it by and how long it lives."""

    name = forms.CharField(label=_("Name"), max_length=100, widget=forms.TextInput(attrs={"placeholder": _("e.g. my phone")}))
    expiry_days = forms.IntegerField(
        label=_("Expires after (days)"), min_value=1, max_value=365, initial=30,
        help_text=_("Between 1 and 365 days."),
    )


class StaffPasswordForm(AdminPasswordChangeForm):
    """Django's form for staff setting a user's password, with its help in the reader's
    language: Django builds this help text by adding its warning to a lazy translation
    when the class is made, which turns the whole text into English for good."""

    usable_password_help_text = format_lazy(
        '{}<ul id="id_unusable_warning" class="messagelist"><li class="warning">{}</li></ul>',
        SetUnusablePasswordMixin.usable_password_help_text,
        _("If disabled, the current password for this user will be lost."),
    )
