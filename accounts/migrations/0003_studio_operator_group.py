"""The "studio operator" group: runs the studio day to day without managing accounts.

Operators may see and act on tasks, images, backends, checkpoints and workflow
templates, and look at django-q2's queue and results. They get no permission on
users, groups or API tokens.

Permissions are normally created after `migrate` by a post_migrate signal, which has
not run yet for apps migrated in the same run, so they are created here first.
"""
from django.contrib.auth.management import create_permissions
from django.db import migrations

GROUP = "studio operator"
PERMISSIONS = {
    "generation": {"generationtask": ("view", "change"), "generatedimage": ("view", "change")},
    "models_catalog": {
        "comfybackend": ("view", "change"),
        "checkpoint": ("view", "change"),
        "workflowtemplate": ("view", "change"),
    },
    "django_q": {
        "ormq": ("view",),
        "success": ("view",),
        "failure": ("view",),
        "schedule": ("view",),
        "task": ("view",),
    },
}


def create_group(apps, schema_editor):
    for app_config in apps.get_app_configs():
        app_config.models_module = True  # create_permissions skips apps without one
        create_permissions(app_config, apps=apps, verbosity=0, using=schema_editor.connection.alias)
        app_config.models_module = None
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    group, _created = Group.objects.using(schema_editor.connection.alias).get_or_create(name=GROUP)
    wanted = []
    for app_label, models in PERMISSIONS.items():
        for model, actions in models.items():
            for action in actions:
                wanted.append((app_label, f"{action}_{model}"))
    perms = [
        perm
        for perm in Permission.objects.using(schema_editor.connection.alias).select_related("content_type")
        if (perm.content_type.app_label, perm.codename) in wanted
    ]
    group.permissions.add(*perms)


def delete_group(apps, schema_editor):
    apps.get_model("auth", "Group").objects.using(schema_editor.connection.alias).filter(name=GROUP).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("accounts", "0002_apitoken_webhook_secret_apitoken_webhook_url"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
        ("generation", "0005_share_and_retention"),
        ("models_catalog", "0004_comfybackend_abandoned_prompts"),
        ("django_q", "0019_alter_task_options_alter_ormq_key_alter_ormq_lock_and_more"),
    ]

    operations = [migrations.RunPython(create_group, delete_group)]
