"""The parameter limits of a generation: the one home of every bound a request must keep.

The service checks a request with `parameter_errors`; the page form, the API's input
serializer, the workflow-template parameter list and the pages' number inputs read
their bounds from `ranges()` and the lists below, so no two of them can disagree.
Bounds that operators set come from settings and are read when asked (not at import),
so a changed setting applies everywhere at once.
"""
from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings
from django.utils.translation import gettext as _, gettext_lazy

# ComfyUI's KSampler accepts seeds up to 2**64-1; Easel keeps them in a signed 64-bit
# column, so random seeds are drawn below 2**63 and user seeds are bounded the same way.
MAX_SEED = 2**63 - 1
# Width and height are multiples of this (the latent is 1/8 of the picture).
SIZE_MULTIPLE = 8
CFG_MIN, CFG_MAX = 0.0, 30.0
DENOISE_MIN, DENOISE_MAX = 0.0, 1.0

# The samplers and schedulers of ComfyUI 0.3.64 (KSampler's combos in /object_info,
# tests/fixtures/comfyui/object_info_core.json).
SAMPLERS = [
    "euler", "euler_cfg_pp", "euler_ancestral", "euler_ancestral_cfg_pp", "heun", "heunpp2", "dpm_2",
    "dpm_2_ancestral", "lms", "dpm_fast", "dpm_adaptive", "dpmpp_2s_ancestral", "dpmpp_2s_ancestral_cfg_pp",
    "dpmpp_sde", "dpmpp_sde_gpu", "dpmpp_2m", "dpmpp_2m_cfg_pp", "dpmpp_2m_sde", "dpmpp_2m_sde_gpu",
    "dpmpp_2m_sde_heun", "dpmpp_2m_sde_heun_gpu", "dpmpp_3m_sde", "dpmpp_3m_sde_gpu", "ddpm", "lcm", "ipndm",
    "ipndm_v", "deis", "res_multistep", "res_multistep_cfg_pp", "res_multistep_ancestral",
    "res_multistep_ancestral_cfg_pp", "gradient_estimation", "gradient_estimation_cfg_pp", "er_sde", "seeds_2",
    "seeds_3", "sa_solver", "sa_solver_pece", "ddim", "uni_pc", "uni_pc_bh2",
]
SCHEDULERS = [
    "simple", "sgm_uniform", "karras", "exponential", "ddim_uniform", "beta", "normal", "linear_quadratic",
    "kl_optimal",
]


# Parameter names as people read them (in messages that name the field).
LABELS = {"width": gettext_lazy("Width"), "height": gettext_lazy("Height")}


@dataclass(frozen=True)
class Range:
    """Inclusive bounds of one numeric parameter (and the step a form offers)."""

    low: int | float
    high: int | float
    step: int | float | None = None

    def __contains__(self, value) -> bool:
        return self.low <= value <= self.high


def prompt_max_length() -> int:
    return settings.EASEL_MAX_PROMPT_LENGTH


def ranges() -> dict[str, Range]:
    """Every numeric parameter's bounds, as the studio is configured now."""
    size = Range(settings.EASEL_MIN_SIZE, settings.EASEL_MAX_SIZE, SIZE_MULTIPLE)
    return {
        "width": size,
        "height": size,
        "steps": Range(1, settings.EASEL_MAX_STEPS, 1),
        "cfg": Range(CFG_MIN, CFG_MAX, 0.5),
        "batch_size": Range(1, settings.EASEL_MAX_BATCH_SIZE, 1),
        "seed": Range(0, MAX_SEED, 1),
        "denoise": Range(DENOISE_MIN, DENOISE_MAX, 0.05),
    }


def choices() -> dict[str, list[str]]:
    return {"sampler": SAMPLERS, "scheduler": SCHEDULERS}


def parameter_errors(values: dict) -> dict[str, list[str]]:
    """Every value of `values` outside its bounds, with a message for each; {} when all fit.

    Only the names present (and not None) are checked: a request names what it sets.
    Known names: prompt, negative_prompt, width, height, steps, cfg, sampler, scheduler,
    batch_size, seed, denoise.
    """
    errors: dict[str, list[str]] = {}
    bounds = ranges()
    limit = prompt_max_length()
    prompt = values.get("prompt")
    if prompt is not None:
        if not prompt:
            errors["prompt"] = [_("Write a prompt: describe the picture you want.")]
        elif len(prompt) > limit:
            errors["prompt"] = [_("The prompt is too long (at most %(n)d characters).") % {"n": limit}]
    negative = values.get("negative_prompt")
    if negative is not None and len(negative) > limit:
        errors["negative_prompt"] = [_("The negative prompt is too long (at most %(n)d characters).") % {"n": limit}]
    for name in ("width", "height"):
        value = values.get(name)
        if value is not None and (value % SIZE_MULTIPLE or value not in bounds[name]):
            errors[name] = [
                _("%(field)s must be a multiple of 8 between %(low)d and %(high)d.")
                % {"field": LABELS[name], "low": bounds[name].low, "high": bounds[name].high}
            ]
    steps = values.get("steps")
    if steps is not None and steps not in bounds["steps"]:
        errors["steps"] = [_("Steps must be between 1 and %(n)d.") % {"n": bounds["steps"].high}]
    cfg = values.get("cfg")
    if cfg is not None and cfg not in bounds["cfg"]:
        errors["cfg"] = [_("CFG must be between 0 and 30.")]
    for name, message in (("sampler", _("Unknown sampler: %(name)s.")), ("scheduler", _("Unknown scheduler: %(name)s."))):
        value = values.get(name)
        if value is not None and value not in choices()[name]:
            errors[name] = [message % {"name": value}]
    batch = values.get("batch_size")
    if batch is not None and batch not in bounds["batch_size"]:
        errors["batch_size"] = [_("Batch size must be between 1 and %(n)d.") % {"n": bounds["batch_size"].high}]
    seed = values.get("seed")
    if seed is not None and seed not in bounds["seed"]:
        errors["seed"] = [_("The seed must be between 0 and %(n)d.") % {"n": MAX_SEED}]
    denoise = values.get("denoise")
    if denoise is not None and denoise not in bounds["denoise"]:
        errors["denoise"] = [_("Denoise must be between 0 and 1.")]
    return errors
