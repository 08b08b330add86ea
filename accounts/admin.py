"""Staff screens for accounts: limits, usage, and switching accounts off."""
from __future__ import annotations

from django.contrib import admin, messages
from django.contrib.auth.admin import GroupAdmin as DjangoGroupAdmin, UserAdmin as DjangoUserAdmin
from django.contrib.auth.models import Group
from django.urls import reverse
from django.utils.html import format_html
from django.utils.translation import gettext, gettext_lazy as _, ngettext

from generation.models import GeneratedImage
from generation.quota import images_used_today

from .forms import AdminSignInForm, StaffPasswordForm
from .groups import BUILTIN_GROUPS, group_label
from .models import ApiToken, User
from .services import user_deactivate


@admin.register(User)
class UserAdmin(DjangoUserAdmin):
    change_password_form = StaffPasswordForm
    list_display = (
        "username", "email", "display_name", "is_active", "is_staff", "date_joined",
        "usage_today", "daily_image_quota", "max_concurrent_tasks", "priority", "tasks_link",
    )
    list_editable = ("daily_image_quota", "max_concurrent_tasks", "priority")
    list_filter = ("is_active", "is_staff", "is_superuser", ("date_joined", admin.DateFieldListFilter), "groups")
    search_fields = ("username", "email", "display_name", "first_name", "last_name")
    ordering = ("-date_joined", "-id")
    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER
    fieldsets = DjangoUserAdmin.fieldsets + (
        (_("Studio"), {"fields": ("display_name", "daily_image_quota", "max_concurrent_tasks", "priority",
                                  "images_total")}),
    )
    readonly_fields = ("images_total",)
    actions = ["deactivate", "activate"]

    def get_queryset(self, request):
        # A correlated subquery rather than a join: one query per row does not scale to
        # the list page.
        return super().get_queryset(request).annotate(used_today=images_used_today())

    @admin.display(description=_("images today"), ordering="used_today")
    def usage_today(self, user):
        return f"{user.used_today} / {user.daily_image_quota}"

    # Images in total are on the user's own page only: counting them for every row of
    # the list costs a pass over the image table per user (seconds at 100,000 images).
    @admin.display(description=_("images in total"))
    def images_total(self, user):
        return GeneratedImage.objects.filter(task__user=user).count()

    @admin.display(description=_("tasks"))
    def tasks_link(self, user):
        url = reverse("admin:generation_generationtask_changelist") + f"?user__id__exact={user.pk}"
        return format_html('<a href="{}">{}</a>', url, gettext("tasks"))

    @admin.action(description=_("Deactivate: cancel their tasks and revoke their API tokens"), permissions=["change"])
    def deactivate(self, request, queryset):
        for user in queryset.order_by("pk"):
            if user.pk == request.user.pk:
                self.message_user(request, gettext("You cannot deactivate your own account."), messages.WARNING)
                continue
            result = user_deactivate(user=user)
            self.message_user(
                request,
                gettext("%(user)s deactivated: %(tasks)s, %(tokens)s.")
                % {
                    "user": user.username,
                    "tasks": ngettext("%(n)d task cancelled", "%(n)d tasks cancelled", result["tasks_cancelled"])
                    % {"n": result["tasks_cancelled"]},
                    "tokens": ngettext("%(n)d token revoked", "%(n)d tokens revoked", result["tokens_revoked"])
                    % {"n": result["tokens_revoked"]},
                },
                messages.SUCCESS,
            )

    @admin.action(description=_("Activate"), permissions=["change"])
    def activate(self, request, queryset):
        changed = queryset.filter(is_active=False).update(is_active=True)
        self.message_user(
            request,
            ngettext("%(n)d account activated.", "%(n)d accounts activated.", changed) % {"n": changed},
            messages.SUCCESS,
        )


# The admin's login counts wrong passwords with the API's and the sign-in page's (accounts.lockout).
admin.site.login_form = AdminSignInForm

admin.site.unregister(Group)


@admin.register(Group)
class GroupAdmin(DjangoGroupAdmin):
    """Django's group screens; a group Easel made says how its name reads to others."""

    def get_form(self, request, obj=None, change=False, **kwargs):
        form = super().get_form(request, obj, change=change, **kwargs)
        if obj is not None and obj.name in BUILTIN_GROUPS:
            form.base_fields["name"].help_text = gettext(
                "Easel's own group: Easel finds it by this name, so keep it as it is. Everyone sees it in "
                "their language (here: “%(shown)s”)."
            ) % {"shown": group_label(obj.name)}
        return form


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    """Tokens are only listed and revoked here: the clear text exists only at creation."""

    list_display = ("shown_name", "kind", "token_key", "user", "created", "expiry")
    list_filter = ("kind",)
    list_select_related = ("user",)
    search_fields = ("name", "token_key", "user__username")
    readonly_fields = ("kind", "token_key", "user", "created", "expiry", "webhook_url")
    fields = ("name", "kind", "token_key", "user", "created", "expiry", "webhook_url")

    # A token made by signing in has no name: it is listed by what made it, translated.
    @admin.display(description=_("name"), ordering="name")
    def shown_name(self, token):
        return token.label

    def has_add_permission(self, request):
        return False
