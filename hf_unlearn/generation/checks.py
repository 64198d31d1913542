"""Input checks of GUARD's public functions: the model must be a causal LM (errors name its class).
Stored tensor files are read with :func:`hf_unlearn.importance.io.load_safetensors_checked`."""

from __future__ import annotations

CAUSAL_LM = (
    "a decoder-only causal language model (a transformers PreTrainedModel with a language-model head that "
    "can generate, e.g. from AutoModelForCausalLM)"
)


def check_causal_lm(model, who: str) -> None:
    """``TypeError`` naming the class of ``model`` unless it is a decoder-only causal LM.

    Accepted: a ``transformers.PreTrainedModel`` (or a PEFT wrapper of one) whose class can ``generate``
    and is not an encoder-decoder. Refused, for example: image or text classifiers, base models without a
    language-model head (``LlamaModel``), seq2seq models (T5), plain ``torch.nn.Module``s.
    """
    from transformers import PreTrainedModel

    base = model.get_base_model() if callable(getattr(model, "get_base_model", None)) else model
    name = type(base).__name__
    if not isinstance(base, PreTrainedModel):
        reason = "it is not a transformers PreTrainedModel"
    elif getattr(base.config, "is_encoder_decoder", False):
        reason = "it is an encoder-decoder model"
    elif not base.can_generate():
        reason = "it has no language-model head, so it cannot generate"
    else:
        return
    raise TypeError(f"{name} is not {CAUSAL_LM}: {reason}; {who} needs one")
