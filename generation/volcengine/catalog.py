"""The VolcEngine text-to-image models Easel knows how to call: each model's ``req_key``, its name, the parameters
it accepts and their limits. A VolcEngine backend offers some of them (chosen by staff); they appear in Easel's
catalog as checkpoints whose file name is the ``req_key``.

Limits are the models' documented ones as far as they could be read here (see the stand-in's README for what could
not be verified against the live service); ``params_for`` keeps a request inside them.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..comfy.errors import gettext_noop


@dataclass(frozen=True)
class VolcModel:
    req_key: str
    #: In English (the checkpoint's name as Easel stores it); marked so pages can show it translated.
    display_name: str
    min_side: int
    max_side: int
    default_side: int
    #: The model's "scale" (how closely it follows the prompt) and its range, or None when it has none.
    scale_range: tuple[float, float] | None = None
    max_prompt_chars: int = 800

    def params(self, *, prompt: str, width: int, height: int, seed: int | None,
               scale: float | None = None) -> dict:
        """The submit body for one picture (without ``req_key``). Sizes outside the model's range are refused,
        not clamped: a picture of another size than asked for would surprise its owner."""
        body: dict = {"prompt": prompt, "width": int(width), "height": int(height),
                      "seed": -1 if seed is None or seed < 0 else int(seed) % 2**31}
        if self.scale_range is not None and scale is not None:
            low, high = self.scale_range
            body["scale"] = min(high, max(low, float(scale)))
        return body

    def size_ok(self, width: int, height: int) -> bool:
        return self.min_side <= width <= self.max_side and self.min_side <= height <= self.max_side


MODELS: dict[str, VolcModel] = {model.req_key: model for model in (
    VolcModel("jimeng_t2i_v40", gettext_noop("Jimeng 4.0"), min_side=1024, max_side=4096, default_side=2048,
              scale_range=(0.0, 1.0)),
    VolcModel("jimeng_t2i_v31", gettext_noop("Jimeng 3.1"), min_side=512, max_side=2048, default_side=1328),
    VolcModel("high_aes_general_v30l_zt2i", gettext_noop("Doubao general 3.0"), min_side=512, max_side=2048,
              default_side=1328, scale_range=(1.0, 10.0)),
)}
