from django.db import migrations


def forwards(apps, schema_editor):
    # Adds the built-in img2img template to databases created before it shipped, and
    # refreshes the built-in graphs and bindings.
    from models_catalog.builtin import ensure_builtin_templates

    ensure_builtin_templates(apps.get_model("models_catalog", "WorkflowTemplate"))


class Migration(migrations.Migration):
    dependencies = [("models_catalog", "0004_comfybackend_abandoned_prompts")]
    operations = [migrations.RunPython(forwards, migrations.RunPython.noop)]
