"""Per-completion trajectory fields computed from one TRL training batch (no extra forward pass).

`GRPOTrainer._generate_and_score_completions` returns the batch the loss trains on (token ids, masks,
advantages) and leaves the newest prompt/completion texts and per-function rewards in `trainer._logs`.
`trajectory_columns` turns both into the store's trajectory columns: lengths, truncation, repetition and
unique-token ratios, short/long/empty flags, total and per-function rewards, advantages and their group
statistics. Token statistics are a few vectorised torch ops on tensors that already exist, moved to the
CPU once per batch. Kept apart from the recorder so that the arithmetic can be tested (and reused, e.g.
by an online supervisor) without a callback, a store or a trainer loop.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

# Token-statistic thresholds (see `token_statistics`).
NGRAM = 3
SHORT_FRACTION = 0.05
LONG_FRACTION = 0.95
MIN_TOKENS = 2

TOKEN_FIELDS = ("response_length", "truncated", "repetition_ratio", "unique_token_ratio")


def message_text(value: Any) -> str:
    """Prompt or completion as text: a string as is; chat messages → their text.

    One message gives its content alone; several give one "role: content" line each. Content given as
    parts keeps only the text parts (images are dropped).
    """
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        value = [value]
    if isinstance(value, list):
        texts = []
        for message in value:
            if not isinstance(message, dict):
                texts.append(("", str(message)))
                continue
            content = message.get("content")
            if isinstance(content, list):
                content = "".join(
                    str(part.get("text", "")) for part in content if isinstance(part, dict) and "text" in part
                )
            texts.append((str(message.get("role", "")), "" if content is None else str(content)))
        if len(texts) == 1:
            return texts[0][1]
        return "\n".join(f"{role}: {text}" if role else text for role, text in texts)
    return str(value)


def _distinct_counts(codes: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Per row, how many distinct non-negative codes sit at valid positions (vectorised: sort, count)."""
    masked = torch.where(valid, codes, torch.full_like(codes, -1))
    ordered, _ = masked.sort(dim=1)
    new = torch.ones_like(ordered, dtype=torch.bool)
    new[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
    return (new & (ordered >= 0)).sum(dim=1)


def token_statistics(
    completion_ids: torch.Tensor,
    completion_mask: torch.Tensor,
    eos_token_ids: Sequence[int],
    pad_token_id: int | None = None,
    recover_masked_rows: bool = False,
) -> dict[str, list]:
    """Shape statistics of a right-padded batch of completions, computed on the tensors' device.

    - response_length: tokens in the completion (completion_mask; the EOS token counts).
    - truncated: no EOS token among the completion's tokens (it was cut at the length cap). This can
      differ from TRL's `completions/clipped_ratio`, which also counts a completion whose last token is
      the pad token as terminated (a model may sample the pad token).
    - repetition_ratio: 1 − distinct 3-grams / 3-grams over token ids; 0 when there are fewer than 3
      tokens (no 3-gram). Near 1 means a loop.
    - unique_token_ratio: distinct tokens / tokens; 0 for an empty completion.

    `recover_masked_rows` handles TRL's `mask_truncated_completions`, which zeroes the mask of truncated
    completions: a row with an all-zero mask then gets its length from its last non-pad token.
    """
    ids = completion_ids.detach().long()
    mask = completion_mask.detach().bool()
    batch, width = ids.shape
    if recover_masked_rows and pad_token_id is not None and width:
        empty = ~mask.any(dim=1)
        if bool(empty.any()):
            positions = torch.arange(1, width + 1, device=ids.device).expand(batch, width)
            last = torch.where(ids != pad_token_id, positions, torch.zeros_like(positions)).amax(dim=1)
            recovered = positions <= last.unsqueeze(1)
            mask = torch.where(empty.unsqueeze(1), recovered, mask)
    lengths = mask.sum(dim=1)
    eos = torch.tensor(list(eos_token_ids), device=ids.device, dtype=ids.dtype)
    has_eos = (torch.isin(ids, eos) & mask).any(dim=1) if eos.numel() else torch.zeros_like(lengths).bool()

    unique_tokens = _distinct_counts(ids, mask) if width else torch.zeros_like(lengths)
    if width >= NGRAM:
        vocab = int(ids.max().item()) + 1 if ids.numel() else 1
        windows = ids.unfold(1, NGRAM, 1)  # (batch, width - n + 1, n)
        codes = windows[..., 0]
        for k in range(1, NGRAM):
            codes = codes * vocab + windows[..., k]  # exact for vocab ≤ 2M; wraps (rare collisions) above
        valid = mask.unfold(1, NGRAM, 1).all(dim=-1)
        grams = valid.sum(dim=1)
        distinct = _distinct_counts(codes, valid)
    else:
        grams = distinct = torch.zeros_like(lengths)
    lengths_f = lengths.double()
    repetition = torch.where(grams > 0, 1.0 - distinct.double() / grams.clamp(min=1).double(), 0.0)
    unique_ratio = torch.where(lengths > 0, unique_tokens.double() / lengths_f.clamp(min=1.0), 0.0)
    stacked = torch.stack([lengths_f, (~has_eos).double(), repetition, unique_ratio]).cpu()  # one sync
    length, truncated, rep, uniq = stacked.tolist()
    return {
        "response_length": [int(x) for x in length],
        "truncated": [bool(x) for x in truncated],
        "repetition_ratio": rep,
        "unique_token_ratio": uniq,
    }


def _tail(values: Any, n: int) -> list | None:
    """The newest n entries of a deque/list, or None when it holds fewer."""
    if values is None or len(values) < n:
        return None
    items = list(values)
    return items[len(items) - n :]


def _is_short(length: int | None, max_len: int | None) -> bool | None:
    """Short: fewer than 2 tokens, or under 5% of max_completion_length; None when the length is unknown."""
    if length is None:
        return None
    return length < MIN_TOKENS or bool(max_len and length < SHORT_FRACTION * max_len)


def _is_long(length: int | None, max_len: int | None) -> bool | None:
    """Long: at least 95% of max_completion_length; None when the length or the cap is unknown."""
    if length is None or not max_len:
        return None
    return length >= LONG_FRACTION * max_len


def _group_stats(advantages: np.ndarray, group_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the mean and sample std (ddof=1, as TRL's `nanstd`) of its group's advantages.

    Groups are consecutive runs of `group_size` rows, as TRL lays them out; NaNs are left out.
    """
    n = advantages.shape[0]
    padded = np.full(-(-n // group_size) * group_size, np.nan)  # a ragged last group is NaN-padded
    padded[:n] = advantages
    grouped = padded.reshape(-1, group_size)
    valid = ~np.isnan(grouped)
    count = valid.sum(axis=1)
    filled = np.where(valid, grouped, 0.0)
    mean = np.divide(filled.sum(axis=1), count, out=np.full(count.shape, np.nan), where=count > 0)
    squares = np.where(valid, (grouped - mean[:, None]) ** 2, 0.0).sum(axis=1)
    std = np.sqrt(np.divide(squares, count - 1, out=np.full(count.shape, np.nan), where=count > 1))
    return np.repeat(mean, group_size)[:n], np.repeat(std, group_size)[:n]


def trajectory_columns(
    trainer: Any, output: dict[str, Any], warn: Callable[[str, str], None]
) -> dict[str, list]:
    """One generation batch's trajectory columns (one value per completion, in TRL's row order).

    `output` is what `_generate_and_score_completions` returned; the texts and per-function rewards
    come from `trainer._logs`, which TRL gathers over all processes. When `_logs` does not hold this
    batch, `warn(kind, message)` is called and the rows are this process's alone, without rewards.
    """
    completion_ids: torch.Tensor = output["completion_ids"]
    completion_mask: torch.Tensor = output["completion_mask"]
    local = int(completion_ids.shape[0])
    num_processes = int(getattr(getattr(trainer, "accelerator", None), "num_processes", 1) or 1)
    group_size = int(getattr(trainer, "num_generations", 1) or 1)
    step = int(trainer.state.global_step) + 1

    tokenizer = getattr(trainer, "processing_class", None)
    tokenizer = getattr(tokenizer, "tokenizer", tokenizer)  # a multimodal processor wraps one
    pad_id = getattr(trainer, "pad_token_id", None)
    if pad_id is None:
        pad_id = getattr(tokenizer, "pad_token_id", None)
    eos_ids = getattr(trainer, "eos_token_ids", None)
    if eos_ids is None:
        single = getattr(trainer, "eos_token_id", None)
        single = single if single is not None else getattr(tokenizer, "eos_token_id", None)
        eos_ids = [] if single is None else [single]
    stats = token_statistics(
        completion_ids,
        completion_mask,
        [int(e) for e in eos_ids],
        pad_token_id=pad_id,
        recover_masked_rows=bool(getattr(trainer, "mask_truncated_completions", False)),
    )

    names = list(getattr(trainer, "reward_func_names", []) or [])
    logs = getattr(trainer, "_logs", None) or {}
    n = local * num_processes
    prompts = _tail(logs.get("prompt"), n)
    completions = _tail(logs.get("completion"), n)
    advantages = _tail(logs.get("advantages"), n)
    reward_logs = logs.get("rewards") or {}
    per_func = {name: _tail(reward_logs.get(name), n) for name in names}
    if (
        prompts is None
        or completions is None
        or advantages is None
        or any(v is None for v in per_func.values())
    ):
        # `_logs` is not what TRL 1.16 keeps: fall back to this process's tensors alone.
        warn("logs_layout", "trainer._logs lacks this batch: recording local rows without rewards")
        n = local
        prompts = _decode(tokenizer, output.get("prompt_ids"), output.get("prompt_mask"))
        completions = _decode(tokenizer, completion_ids, completion_mask)
        advantages = output["advantages"].detach().float().cpu().tolist()
        per_func = {name: [math.nan] * n for name in names}

    if num_processes == 1 and "advantages" in output:
        # What the loss trains on. TRL logs advantages before returning the batch; a hook that changes
        # them afterwards (a credit-assignment fault, an advantage filter) is only visible here.
        advantages = output["advantages"].detach().double().cpu().tolist()

    reward_matrix = np.array([per_func[k] for k in names], dtype=np.float64).T.reshape(n, len(names))
    weights = getattr(trainer, "reward_weights", None)
    if isinstance(weights, torch.Tensor):
        weights = weights.detach().cpu().tolist()
    weight = np.ones(len(names))
    if weights is not None and len(weights) == len(names):
        weight = np.asarray(weights, dtype=np.float64)
    total = np.nansum(reward_matrix * weight, axis=1)
    total[np.isnan(reward_matrix).all(axis=1)] = np.nan  # unscorable: every function returned None
    adv = np.asarray(advantages, dtype=np.float64)
    index = np.arange(n)
    group_ids = index // group_size
    adv_mean, adv_std = _group_stats(adv, group_size)

    max_len = getattr(trainer.args, "max_completion_length", None)
    prompt_text = [message_text(p) for p in prompts]
    completion_text = [message_text(c) for c in completions]
    lengths: list[int | None] = list(stats["response_length"]) + [None] * (n - local)
    cols: dict[str, list] = {
        "step": [step] * n,
        "prompt_id": [hashlib.blake2b(p.encode(), digest_size=8).hexdigest() for p in prompt_text],
        "group_id": group_ids.tolist(),
        "sample_index": (index % group_size).tolist(),
        "prompt": prompt_text,
        "completion": completion_text,
        "reward": total.tolist(),
        "rewards": [list(zip(names, row, strict=True)) for row in reward_matrix.tolist()],
        "advantage": adv.tolist(),
        "advantage_mean": adv_mean.tolist(),
        "advantage_std": adv_std.tolist(),
        "empty_response": [
            length == 0 or not text.strip() for length, text in zip(lengths, completion_text, strict=True)
        ],
        "short_response": [_is_short(length, max_len) for length in lengths],
        "long_response": [_is_long(length, max_len) for length in lengths],
    }
    for field in TOKEN_FIELDS:
        cols[field] = list(stats[field]) + [None] * (n - local)
    cols["return"] = list(cols["reward"])  # one outcome reward per completion, undiscounted
    return cols


def _decode(tokenizer: Any, ids: torch.Tensor | None, mask: torch.Tensor | None) -> list[str]:
    """Texts of a padded id batch (fallback only; the normal path reads TRL's already-decoded text)."""
    if ids is None or tokenizer is None:
        return [""] * (0 if ids is None else int(ids.shape[0]))
    keep = (mask if mask is not None else torch.ones_like(ids)).bool().cpu()
    rows = [row[m].tolist() for row, m in zip(ids.cpu(), keep, strict=True)]
    return list(tokenizer.batch_decode(rows, skip_special_tokens=True))


__all__ = ["TOKEN_FIELDS", "message_text", "token_statistics", "trajectory_columns"]
