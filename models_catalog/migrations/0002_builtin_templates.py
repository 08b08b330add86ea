from django.db import migrations


def forwards(apps, schema_editor):
    from models_catalog.builtin import ensure_builtin_templates

    ensure_builtin_templates(apps.get_model("models_catalog", "WorkflowTemplate"))


class Migration(migrations.Migration):
    dependencies = [("models_catalog", "0001_initial")]
    operations = [migrations.RunPython(forwards, migrations.RunPython.noop)]
