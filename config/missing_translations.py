"""Messages of Django and django-q2 that their own zh_Hans catalogues lack.

Easel's pages and admin show them (a password that is too short, the admin's menu
headings, the permission lists), so a Chinese reader met English there. Easel's
catalogue translates them instead: LOCALE_PATHS comes first when Django looks a
message up, for every app.

Nothing imports this module. It exists so that `makemessages` finds these message ids
in Easel's code and keeps them in locale/ (with --no-obsolete it drops every message
no code of Easel's names). Each is written exactly as its library writes it, with the
same marker (gettext_noop, or ngettext_lazy for plurals). tests/test_i18n.py checks
that each one is still missing from its library's own catalogue, so this list shrinks
when Django or django-q2 catch up.
"""
from django.utils.translation import gettext_noop, ngettext_lazy

DJANGO = (
    # django.contrib.auth.password_validation.MinimumLengthValidator (Django 5.2 changed
    # the message, and the zh_Hans catalogue has only the old one).
    ngettext_lazy(
        "This password is too short. It must contain at least %d character.",
        "This password is too short. It must contain at least %d characters.",
        "min_length",
    ),
    # django.contrib.admin: the app list's column headings (read by screen readers),
    # the title of a form with errors, the user add form.
    gettext_noop("Model name"),
    gettext_noop("Add link"),
    gettext_noop("Change or view list link"),
    gettext_noop("Error:"),
    gettext_noop("After you’ve created a user, you’ll be able to edit more user options."),
    # django.forms.models.ModelChoiceField (a choice that vanished meanwhile).
    gettext_noop("%(model)s instance with %(field)s %(value)r is not a valid choice."),
)

DJANGO_Q = (
    # django_q.models.Task: its model's name, in the permission lists of the user and
    # group forms (django-q2's own pages are its business).
    gettext_noop("Task"),
    gettext_noop("Tasks"),
)
