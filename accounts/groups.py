"""Django's auth records as a Chinese reader should see them in the admin.

Two kinds of names are stored once, in English, and read by everyone:

- the groups Easel creates (migration 0003 makes "studio operator"): the name is an
  identifier (code and migrations look the group up by it), so it stays as stored and
  is shown through gettext; a group staff create is shown as they named it;
- default permissions, whose names Django writes in English when it creates them
  ("Can add generation task"): shown with the action and the model's name in the
  reader's language; any other permission keeps its stored name.

`AccountsConfig.ready` makes these the way groups and permissions print, so every
place the admin lists or picks them (lists, filters, the user and group forms, titles,
breadcrumbs, history) reads the same.
"""
from __future__ import annotations

from django.utils.translation import gettext, gettext_lazy, gettext_noop

# The stored name of the group migration 0003 creates (it spells it out itself: a
# migration must not change when this module does).
STUDIO_OPERATOR = gettext_noop("studio operator")
BUILTIN_GROUPS = frozenset({STUDIO_OPERATOR})

DEFAULT_PERMISSIONS = {
    "add": gettext_lazy("Can add %(model)s"),
    "change": gettext_lazy("Can change %(model)s"),
    "delete": gettext_lazy("Can delete %(model)s"),
    "view": gettext_lazy("Can view %(model)s"),
}


def group_label(name: str) -> str:
    return gettext(name) if name in BUILTIN_GROUPS else name


def permission_label(permission) -> str:
    """"app | model | Can add model", like Django's own, in the reader's language."""
    content_type = permission.content_type
    model = content_type.model_class()
    action, _, model_name = permission.codename.partition("_")
    if model is not None and model_name == model._meta.model_name and action in DEFAULT_PERMISSIONS:
        name = DEFAULT_PERMISSIONS[action] % {"model": model._meta.verbose_name}
    else:
        name = permission.name
    return f"{content_type} | {name}"


def _group_str(group) -> str:
    return group_label(group.name)


def _permission_str(permission) -> str:
    return permission_label(permission)


def install() -> None:
    """Print groups and permissions in the reader's language (called once, at startup)."""
    from django.contrib.auth.models import Group, Permission

    Group.__str__ = _group_str
    Permission.__str__ = _permission_str
