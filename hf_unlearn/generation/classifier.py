"""GUARD's prompt classifier (Deng et al., 2025, arXiv 2505.13312, Sec. 3.1): does a prompt target the
forget set?

Features are the frozen model's hidden states of one layer, mean-pooled over the prompt's real tokens
(paper Eq. 3: z = (1/L) Σ_j m_j h_j^(l), L = Σ_j m_j; default l = the penultimate layer), or a sentence
embedding of the prompt text. A small MLP (d → 256 → 256 → 2, ReLU, dropout 0.1) is trained with
cross-entropy on forget prompts (label 1) against retain and general prompts (label 0); a prompt is a
target when p(forget | z) > threshold. Features are standardised with the training mean and std, which
are saved with the weights.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from ..importance.io import load_safetensors_checked
from .checks import check_causal_lm

CLASSIFIER_FILE = "prompt_classifier.safetensors"
CLASSIFIER_CONFIG = "prompt_classifier.json"


@torch.no_grad()
def mean_pooled_hidden_states(model, input_ids, attention_mask, layer: int = -2) -> torch.Tensor:
    """Eq. 3: mean of layer ``layer``'s hidden states over the real (mask = 1) tokens, (B, d), fp32.

    ``layer`` indexes ``output_hidden_states`` (0 = embeddings, -1 = last layer, -2 = penultimate).
    Works for left- or right-padded batches: positions count real tokens only, as in ``generate``, so a
    prompt's features do not depend on the padding of its batch.
    """
    check_causal_lm(model, "mean_pooled_hidden_states")
    position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
    out = model(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=position_ids,
        output_hidden_states=True,
    )
    return masked_mean(out.hidden_states[layer], attention_mask)


def masked_mean(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """(B, T, d) hidden states → (B, d) fp32 mean over the positions where the mask is 1."""
    mask = attention_mask.to(torch.float32).unsqueeze(-1)  # (B, T, 1)
    return (hidden.float() * mask).sum(1) / mask.sum(1).clamp(min=1)


class PromptClassifier(torch.nn.Module):
    """MLP p(forget | z); ``fit`` trains it, ``save_pretrained``/``from_pretrained`` store it."""

    def __init__(self, input_dim: int, hidden_size: int = 256, dropout: float = 0.1):
        super().__init__()
        self.input_dim, self.hidden_size, self.dropout = input_dim, hidden_size, dropout
        self.net = torch.nn.Sequential(
            torch.nn.Linear(input_dim, hidden_size),
            torch.nn.ReLU(),
            torch.nn.Dropout(dropout),
            torch.nn.Linear(hidden_size, hidden_size),
            torch.nn.ReLU(),
            torch.nn.Dropout(dropout),
            torch.nn.Linear(hidden_size, 2),
        )
        self.register_buffer("mean", torch.zeros(input_dim))
        self.register_buffer("std", torch.ones(input_dim))

    @classmethod
    def seeded(cls, input_dim: int, hidden_size: int = 256, seed: int = 0) -> PromptClassifier:
        """A classifier whose initial weights depend only on ``seed`` (the caller's RNG is left alone)."""
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            return cls(input_dim, hidden_size)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Logits (B, 2) of (not target, target) for features (B, d)."""
        return self.net((features.float() - self.mean) / self.std)

    @torch.no_grad()
    def target_probability(self, features: torch.Tensor) -> torch.Tensor:
        """p(forget | z), (B,)."""
        was = self.training
        self.eval()
        p = F.softmax(self(features), dim=-1)[:, 1]
        self.train(was)
        return p

    def fit(
        self,
        features: torch.Tensor,
        labels: torch.Tensor,
        epochs: int = 300,
        learning_rate: float = 1e-3,
        weight_decay: float = 1e-4,
        seed: int = 0,
    ) -> list[float]:
        """Full-batch AdamW on class-balanced cross-entropy; returns the loss per epoch."""
        labels = labels.long()
        if set(labels.tolist()) != {0, 1}:
            raise ValueError("the prompt classifier needs both target (1) and non-target (0) prompts")
        features = features.float()
        self.mean.copy_(features.mean(0))
        self.std.copy_(features.std(0).clamp(min=1e-6))
        counts = torch.bincount(labels, minlength=2).float()
        weight = counts.sum() / (2 * counts)  # balanced classes
        opt = torch.optim.AdamW(self.parameters(), lr=learning_rate, weight_decay=weight_decay)
        history = []
        with torch.random.fork_rng():  # seeded dropout, without touching the caller's RNG
            torch.manual_seed(seed)
            self.train()
            for _ in range(epochs):
                opt.zero_grad()
                loss = F.cross_entropy(self(features), labels, weight=weight.to(features.device))
                loss.backward()
                opt.step()
                history.append(loss.item())
        self.eval()
        return history

    def save_pretrained(self, folder) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        config = {"input_dim": self.input_dim, "hidden_size": self.hidden_size, "dropout": self.dropout}
        (folder / CLASSIFIER_CONFIG).write_text(json.dumps(config, indent=2))
        save_file({k: v.contiguous() for k, v in self.state_dict().items()}, str(folder / CLASSIFIER_FILE))

    @classmethod
    def from_pretrained(cls, folder) -> PromptClassifier:
        folder = Path(folder)
        config = json.loads((folder / CLASSIFIER_CONFIG).read_text())
        clf = cls(**config)
        clf.load_state_dict(load_safetensors_checked(folder / CLASSIFIER_FILE, "GUARD prompt classifier")[0])
        return clf.eval()
