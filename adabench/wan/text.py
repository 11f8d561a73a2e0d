"""Prompt -> umT5 text embedding [1, 512, text_dim], as the Wan family encodes it; once per prompt per run.

Upstream's recipe: whitespace-cleaned prompt, tokenised with the end-of-sequence token and
padded to 512 tokens, encoded with the attention mask, and every position past the prompt
set to zero (the DiT attends to all 512). Encodings are cached per prompt. The encoder
(about 11 GB in bf16 for umT5-XXL) can stay on the device (``encoder=keep``), go to the CPU
between encodings (``offload``, the default) or be freed at the first rollout (``release``:
only prompts encoded before then, e.g. every prompt a ``compare`` plan checked, can be used).
"""

from __future__ import annotations

import re
from typing import Any

import torch

from adabench.errors import UserError

ENCODER_MODES = ("keep", "offload", "release")
# umT5-XXL, the encoder every Wan2.1 model uses (built randomly for random=1.3b)
UMT5_XXL = dict(vocab_size=256384, d_model=4096, d_kv=64, d_ff=10240, num_layers=24, num_heads=64,
                relative_attention_num_buckets=32, relative_attention_max_distance=128,
                feed_forward_proj="gated-gelu", dense_act_fn="gelu_new", is_gated_act=True)
UMT5_TINY = dict(vocab_size=128, d_model=32, d_kv=16, d_ff=32, num_layers=1, num_heads=2,
                 relative_attention_num_buckets=8, relative_attention_max_distance=16,
                 feed_forward_proj="gated-gelu", dense_act_fn="gelu_new", is_gated_act=True)


def clean_prompt(text: str) -> str:
    """Upstream's 'whitespace' cleaning: runs of whitespace become one space, ends stripped."""
    return re.sub(r"\s+", " ", text).strip()


def char_tokenizer() -> Any:
    """A stand-in tokenizer built offline for the randomly initialised models (``random=``): one token per
    printable ASCII character (others: unknown), an end-of-sequence token, padding id 0, like T5's
    special ids. Real models read the umT5 tokenizer from the model folder instead."""
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2}
    vocab.update({chr(c): 3 + i for i, c in enumerate(range(32, 127))})
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")


def random_umt5(size: dict, device: torch.device, dtype: torch.dtype, seed: int = 0) -> torch.nn.Module:
    """A randomly initialised umT5 encoder of the given size (for ``random=`` models)."""
    from transformers import UMT5Config, UMT5EncoderModel

    torch.manual_seed(seed)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)                  # built in its dtype: umT5-XXL is 23 GB in float32
    try:
        with torch.device(device):
            model = UMT5EncoderModel(UMT5Config(**size))
    finally:
        torch.set_default_dtype(previous)
    return model.to(dtype).eval().requires_grad_(False)


class PromptEncoder:
    """umT5 tokenizer + encoder with a per-prompt cache of the padded embeddings."""

    def __init__(self, tokenizer: Any, encoder: torch.nn.Module, device: torch.device, dtype: torch.dtype,
                 text_len: int = 512, mode: str = "offload", source: str = "") -> None:
        if mode not in ENCODER_MODES:
            raise UserError(f"encoder={mode!r} is invalid; accepted: {', '.join(ENCODER_MODES)}")
        self.tokenizer, self.encoder = tokenizer, encoder
        self.device, self.dtype, self.text_len, self.mode = device, dtype, text_len, mode
        self.source = source
        self.bytes = sum(p.numel() * p.element_size() for p in encoder.parameters())
        self._cache: dict[str, torch.Tensor] = {}
        self._released = False
        self._park()

    def _park(self) -> None:
        if self.mode == "offload" and self.encoder is not None:
            self.encoder.to("cpu")

    @property
    def resident_bytes(self) -> int:
        """Bytes of encoder weights on the generator's device now."""
        if self.encoder is None:
            return 0
        return self.bytes if next(self.encoder.parameters()).device.type == self.device.type else 0

    def check(self, prompt: str) -> None:
        """Encode now (a prompt the tokenizer cannot read fails before the run)."""
        self.encode(prompt)

    @torch.inference_mode()
    def encode(self, prompt: str) -> torch.Tensor:
        """[1, text_len, text_dim] in the model's dtype on the device, zero past the prompt's tokens."""
        if not isinstance(prompt, str) or not prompt.strip():
            raise UserError("the prompt is empty; accepted: a text prompt")
        key = clean_prompt(prompt)
        if key in self._cache:
            return self._cache[key]
        if self._released:
            raise UserError(f"prompt {key[:60]!r} was not encoded before the text encoder was released "
                            "(encoder=release frees it at the first rollout); accepted: encoder=offload or keep")
        batch = self.tokenizer([key], padding="max_length", max_length=self.text_len, truncation=True,
                               add_special_tokens=True, return_attention_mask=True, return_tensors="pt")
        ids, mask = batch["input_ids"], batch["attention_mask"]                   # [1, text_len] each
        if self.mode == "offload":
            self.encoder.to(self.device)
        enc_device = next(self.encoder.parameters()).device
        hidden = self.encoder(input_ids=ids.to(enc_device), attention_mask=mask.to(enc_device)).last_hidden_state
        length = int(mask.sum())
        hidden = hidden.float()
        hidden[:, length:] = 0.0                                                  # padding positions are zero
        self._park()
        out = hidden.to(self.device, self.dtype)
        self._cache[key] = out
        return out

    def release(self) -> None:
        """Free the encoder; cached prompts stay usable."""
        if self.mode == "release" and not self._released:
            self.encoder = None
            self._released = True
            if self.device.type == "cuda":
                torch.cuda.empty_cache()

    def describe(self) -> dict:
        return {"text_encoder": self.source, "text_encoder_mode": self.mode, "text_len": self.text_len}
