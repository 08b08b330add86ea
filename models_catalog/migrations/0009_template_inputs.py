"""Template inputs: each value users set is a row (name, target, label, group, default,
limits), Easel's own parameters included; the bindings of existing templates become
inputs of the same names, and the four tools (LoRAs, hires fix, upscale, inpaint) ship."""
import django.db.models.deletion
from django.db import migrations, models

# Easel's own parameters in form order; the first eight are shown first ("basic").
PARAMETERS = (
    "checkpoint", "prompt", "negative_prompt", "image", "denoise", "width", "height", "batch_size",
    "seed", "steps", "cfg", "sampler", "scheduler",
)
ADVANCED = {"seed", "steps", "cfg", "sampler", "scheduler"}
# An imported template's own values become its defaults (models_catalog.templates.GRAPH_DEFAULTS).
GRAPH_DEFAULTS = ("negative_prompt", "width", "height", "batch_size", "steps", "cfg", "sampler", "scheduler", "denoise")


def inputs_from_bindings(apps, schema_editor):
    from models_catalog.builtin import known_spec

    WorkflowTemplate = apps.get_model("models_catalog", "WorkflowTemplate")
    TemplateInput = apps.get_model("models_catalog", "TemplateInput")
    for template in WorkflowTemplate.objects.all():
        bindings = template.bindings if isinstance(template.bindings, dict) else {}
        for name, target in bindings.items():
            if not (isinstance(target, (list, tuple)) and len(target) == 2):
                continue
            order = PARAMETERS.index(name) if name in PARAMETERS else len(PARAMETERS)
            TemplateInput.objects.create(
                template=template, name=name, node_id=str(target[0]), input_name=str(target[1]),
                group="advanced" if name in ADVANCED else "basic", order=order,
                spec=known_spec(_class(template.graph, target[0]), str(target[1])),
                default=_value(template.graph, target) if name in GRAPH_DEFAULTS and not template.builtin else None,
            )


def _class(graph, node_id) -> str:
    node = graph.get(str(node_id)) if isinstance(graph, dict) else None
    return str(node.get("class_type", "")) if isinstance(node, dict) else ""


def _value(graph, target):
    node = graph.get(str(target[0])) if isinstance(graph, dict) else None
    value = (node.get("inputs") or {}).get(str(target[1])) if isinstance(node, dict) else None
    return None if isinstance(value, list) else value


def bindings_from_inputs(apps, schema_editor):
    WorkflowTemplate = apps.get_model("models_catalog", "WorkflowTemplate")
    TemplateInput = apps.get_model("models_catalog", "TemplateInput")
    for template in WorkflowTemplate.objects.all():
        rows = TemplateInput.objects.filter(template=template, name__in=PARAMETERS)
        template.bindings = {row.name: [row.node_id, row.input_name] for row in rows}
        template.save(update_fields=["bindings"])


def ship_tools(apps, schema_editor):
    from models_catalog.builtin import ensure_builtin_templates

    ensure_builtin_templates(apps.get_model("models_catalog", "WorkflowTemplate"))


def unship_tools(apps, schema_editor):
    WorkflowTemplate = apps.get_model("models_catalog", "WorkflowTemplate")
    WorkflowTemplate.objects.filter(builtin=True, slug__in=["txt2img-loras", "hires-fix", "upscale", "inpaint"]).delete()


class Migration(migrations.Migration):
    dependencies = [("models_catalog", "0008_modelfile")]

    operations = [
        migrations.CreateModel(
            name="TemplateInput",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("name", models.SlugField(help_text="What API clients send (a request field or a key of inputs).",
                                          verbose_name="name")),
                ("node_id", models.CharField(max_length=50, verbose_name="node")),
                ("input_name", models.CharField(max_length=100, verbose_name="node input")),
                ("label", models.CharField(blank=True, max_length=200, verbose_name="label")),
                ("help_text", models.CharField(blank=True, max_length=500, verbose_name="help text")),
                ("group", models.CharField(choices=[("basic", "basic"), ("advanced", "advanced")], default="basic",
                                           max_length=20, verbose_name="group")),
                ("default", models.JSONField(blank=True, help_text="Empty: the graph's own value.", null=True,
                                             verbose_name="default")),
                ("order", models.PositiveSmallIntegerField(default=0, verbose_name="order")),
                ("minimum", models.FloatField(blank=True, help_text="Narrows ComfyUI's minimum.", null=True,
                                              verbose_name="minimum")),
                ("maximum", models.FloatField(blank=True, help_text="Narrows ComfyUI's maximum.", null=True,
                                              verbose_name="maximum")),
                ("step", models.FloatField(blank=True, null=True, verbose_name="step")),
                ("spec", models.JSONField(blank=True, default=list, verbose_name="ComfyUI input spec")),
                ("optional", models.BooleanField(
                    default=False,
                    help_text="Left empty, the node is taken out of the graph (an unused LoRA slot, for example).",
                    verbose_name="optional")),
                ("template", models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name="inputs",
                                               to="models_catalog.workflowtemplate", verbose_name="template")),
            ],
            options={
                "verbose_name": "template input",
                "verbose_name_plural": "template inputs",
                "ordering": ["order", "pk"],
                "constraints": [models.UniqueConstraint(fields=("template", "name"),
                                                        name="template_input_unique_name")],
            },
        ),
        migrations.RunPython(inputs_from_bindings, migrations.RunPython.noop),
        # A default, so that going back can add the field again to existing rows.
        migrations.AlterField(model_name="workflowtemplate", name="bindings", field=models.JSONField(default=dict)),
        migrations.RunPython(migrations.RunPython.noop, bindings_from_inputs),
        migrations.RemoveField(model_name="workflowtemplate", name="bindings"),
        migrations.RunPython(ship_tools, unship_tools),
    ]
