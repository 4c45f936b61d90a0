"""``VideoLLMProcessor``: chat messages + frames -> the tensors ``VideoLLM`` takes.

Prompts come from the LLM tokenizer's own chat template. A tokenizer without one gets
:data:`FALLBACK_CHAT_TEMPLATE` (``User: ...`` / ``Assistant: ...<eos>`` turns) at build time, with a warning.
Each ``<video>`` / ``<image>`` placeholder is one added special token; after tokenization it is expanded to
as many copies as the projector makes visual tokens for that input, so the model can merge them in place.
"""

from __future__ import annotations

import logging
import re

import numpy as np
import torch
from transformers import AutoTokenizer

from ..errors import BudgetError, PromptError
from .configuration import VideoLLMConfig
from .preprocess import FramePreprocessor, PreprocessSpec
from .validity import check_checkpoint

logger = logging.getLogger(__name__)

IGNORE_INDEX = -100


def common_prefix_length(a: list[int], b: list[int]) -> int:
    """How many leading ids ``a`` and ``b`` share."""
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


FALLBACK_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{ message['content'] }}\n\n"
    "{% elif message['role'] == 'user' %}User: {{ message['content'] }}\n"
    "{% else %}Assistant: {{ message['content'] }}{{ eos_token }}\n{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}Assistant:{% endif %}"
)


def prepare_tokenizer(tokenizer, video_token: str = "<video>", image_token: str = "<image>"):
    """Add the placeholder tokens, a pad token and (if missing) the fallback chat template. Returns their ids."""
    tokenizer.add_tokens([video_token, image_token], special_tokens=True)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if not tokenizer.chat_template:
        logger.warning("tokenizer has no chat template; using vllm_i2v's fallback (User:/Assistant: turns)")
        tokenizer.chat_template = FALLBACK_CHAT_TEMPLATE
    return tokenizer.convert_tokens_to_ids(video_token), tokenizer.convert_tokens_to_ids(image_token)


class VideoLLMProcessor:
    """Tokenizes conversations with the chat template and preprocesses their frames, batched with left padding."""

    def __init__(self, tokenizer, config: VideoLLMConfig):
        self.tokenizer = tokenizer
        self.config = config
        self.frame_preprocessor = FramePreprocessor(PreprocessSpec.from_dict(config.vision_preprocess))
        self.placeholder_kind = {config.video_token_id: "video", config.image_token_id: "image"}

    @classmethod
    def from_pretrained(cls, path, config: VideoLLMConfig | None = None) -> VideoLLMProcessor:
        if config is None:
            check_checkpoint(path)
            config = VideoLLMConfig.from_pretrained(path)
        return cls(AutoTokenizer.from_pretrained(path), config)

    def save_pretrained(self, path) -> None:
        self.tokenizer.save_pretrained(path)

    # --- prompts -------------------------------------------------------------------------------------------

    def render(self, messages: list[dict], add_generation_prompt: bool) -> str:
        """The conversation as text, through the tokenizer's chat template.

        Message content is a string with ``<video>``/``<image>`` placeholders, or transformers' multimodal list
        form (``[{"type": "video"}, {"type": "text", "text": "..."}]``); each is turned into the form the chat
        template takes (``config.chat_content``: a string, or that list, as converted LLaVA-family templates take).
        """
        content = self._content_parts if self.config.chat_content == "parts" else self._content_text
        messages = [{**m, "content": content(m["content"])} for m in messages]
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)

    def _content_text(self, content) -> str:
        """Content as one string: a list of parts becomes its pieces one per line (``[{"type": "video"},
        {"type": "text", "text": "What moves?"}]`` -> ``"<video>\\nWhat moves?"``, as written by hand)."""
        if isinstance(content, str):
            return content
        placeholders = {"video": self.config.video_token, "image": self.config.image_token}
        parts = []
        for part in content:
            kind = part.get("type")
            if kind == "text":
                parts.append(part["text"])
            elif kind in placeholders:
                parts.append(placeholders[kind])
            else:
                raise PromptError(f"unknown message content part {part!r}; known types: text, video, image")
        return "\n".join(parts)

    def _content_parts(self, content) -> list[dict]:
        """Content as transformers' multimodal list: ``"<video>\nWhat moves?"`` -> ``[{"type": "video"},
        {"type": "text", "text": "What moves?"}]`` (text around a placeholder stripped; the template lays it out)."""
        if not isinstance(content, str):
            return content
        kinds = {self.config.video_token: "video", self.config.image_token: "image"}
        pattern = "(" + "|".join(re.escape(token) for token in kinds) + ")"
        parts = []
        for piece in re.split(pattern, content):
            if piece in kinds:
                parts.append({"type": kinds[piece]})
            elif piece.strip():
                parts.append({"type": "text", "text": piece.strip()})
        return parts

    def _assistant_spans(self, messages: list[dict], text: str) -> list[tuple[int, int]]:
        """Character spans of ``text`` that are assistant replies (with their end-of-turn markup)."""
        spans = []
        for i, message in enumerate(messages):
            if message["role"] != "assistant":
                continue
            before = self.render(messages[:i], add_generation_prompt=True)
            through = self.render(messages[: i + 1], add_generation_prompt=False)
            if not (through.startswith(before) and text.startswith(through)):
                raise PromptError(
                    "the chat template does not render the conversation turn by turn (a later turn rewrites an "
                    "earlier one), so assistant replies cannot be located for the labels"
                )
            spans.append((len(before), len(through)))
        return spans

    def tokenize(self, messages: list[dict], add_generation_prompt: bool = True, with_labels: bool = False):
        """``(ids, labels)`` of one conversation, placeholders not yet expanded; labels are None unless asked."""
        text = self.render(messages, add_generation_prompt=add_generation_prompt and not with_labels)
        encoding = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=with_labels)
        ids = list(encoding["input_ids"])
        if not with_labels:
            return ids, None
        spans = self._assistant_spans(messages, text)
        labels = [
            token if any(start <= begin < end for start, end in spans) else IGNORE_INDEX
            for token, (begin, _) in zip(ids, encoding["offset_mapping"])
        ]
        return ids, labels

    # --- batches -------------------------------------------------------------------------------------------

    def __call__(
        self,
        conversations: list[list[dict]],
        visuals: list[list] | None = None,
        add_generation_prompt: bool = True,
        with_labels: bool = False,
    ) -> dict:
        """Batch conversations and their visual inputs into model inputs.

        ``visuals[b]`` lists conversation ``b``'s inputs in the order of its placeholders: a ``(T, H, W, 3)``
        uint8 array (or :class:`~vllm_i2v.video.VideoClip`) per ``<video>``, an ``(H, W, 3)`` array per
        ``<image>``. Returns ``input_ids``, ``attention_mask`` (left padded), ``pixel_values`` and
        ``frame_counts`` (absent without visuals), and ``labels`` (-100 on prompt, visual and padding
        tokens) when ``with_labels``.
        """
        visuals = visuals if visuals is not None else [[] for _ in conversations]
        if len(visuals) != len(conversations):
            raise PromptError(f"{len(conversations)} conversations but visual inputs for {len(visuals)}")
        rows = [
            self.encode(messages, inputs, add_generation_prompt, with_labels, name=f"conversation {b}")
            for b, (messages, inputs) in enumerate(zip(conversations, visuals))
        ]
        return self.collate(rows)

    def encode(
        self,
        messages: list[dict],
        visuals=(),
        add_generation_prompt: bool = True,
        with_labels: bool = False,
        name: str = "conversation",
        features: list[torch.Tensor] | None = None,
        independent_turns: bool = False,
    ) -> dict:
        """One conversation: ``input_ids`` (placeholders expanded), ``labels`` (or None) and ``pixel_values``
        (one ``(T, 3, H, W)`` tensor per visual input). :meth:`collate` batches such rows.

        ``features`` replaces ``visuals`` with vision-tower features ``(T, N, D)`` computed earlier (a feature
        cache); the row then carries ``vision_features`` instead of ``pixel_values``. ``independent_turns``
        (training): see :meth:`branch_ids`.
        """
        if features is not None:
            counts, visual = [f.shape[0] for f in features], {"vision_features": list(features)}
        else:
            frames = [self._frames_of(x) for x in visuals]
            counts, visual = (
                [f.shape[0] for f in frames],
                {"pixel_values": [self.frame_preprocessor(f) for f in frames]},
            )
        if independent_turns:
            return {**self.branch_ids(messages, counts, name), **visual}
        ids, labels = self.expanded_ids(messages, counts, add_generation_prompt, with_labels, name)
        return {"input_ids": ids, "labels": labels, **visual}

    def branch_ids(self, messages: list[dict], frame_counts: list[int], name: str = "conversation") -> dict:
        """A multi-turn conversation trained as independent one-question conversations about the same visuals.

        Each user/assistant exchange becomes its own conversation (the system message, the first question's
        leading ``<video>``/``<image>`` placeholders, the question, the answer), so no answer can be read off an
        earlier turn. They share their prefix (system prompt and visual tokens), which is laid out once: the row
        is the prefix followed by every exchange's remainder, with ``position_ids`` continuing the prefix in each
        and ``segment_ids`` (0 prefix, k exchange k) from which the model builds an attention mask where each
        exchange sees the prefix and itself only. The loss equals that of the exchanges as separate rows, at the
        cost of one prefix instead of one per exchange. Returns ``input_ids``, ``labels``, ``position_ids``,
        ``segment_ids``.
        """
        system = [m for m in messages if m["role"] == "system"]
        turns = [m for m in messages if m["role"] != "system"]
        if (
            not turns
            or len(turns) % 2
            or any((a["role"], b["role"]) != ("user", "assistant") for a, b in zip(turns[::2], turns[1::2]))
        ):
            raise PromptError(f"{name}: independent turns need user/assistant exchanges")
        lead = self._leading_placeholders(turns[0]["content"], name)
        branches = []
        for k, (user, reply) in enumerate(zip(turns[::2], turns[1::2])):
            content = user["content"] if k == 0 else self._prepend(lead, user["content"])
            conversation = [*system, {"role": "user", "content": content}, reply]
            branches.append(self.expanded_ids(conversation, frame_counts, False, True, name))
        first = branches[0][0]
        shared = min(
            [len(ids) - 1 for ids, _ in branches] + [common_prefix_length(first, ids) for ids, _ in branches[1:]]
        )
        slots = [i for i, t in enumerate(first) if t in self.placeholder_kind]
        later = any(t in self.placeholder_kind for ids, _ in branches[1:] for t in ids[shared:])
        if (slots and slots[-1] >= shared) or later:
            raise PromptError(
                f"{name}: the exchanges do not share their visual tokens (the chat template lays them "
                "out differently per question), so they cannot be trained as independent turns"
            )
        row = {
            "input_ids": first[:shared],
            "labels": branches[0][1][:shared],
            "position_ids": list(range(shared)),
            "segment_ids": [0] * shared,
        }
        for k, (ids, labels) in enumerate(branches, start=1):
            row["input_ids"] += ids[shared:]
            row["labels"] += labels[shared:]
            row["position_ids"] += list(range(shared, len(ids)))
            row["segment_ids"] += [k] * (len(ids) - shared)
        return row

    def _leading_placeholders(self, content, name: str):
        """The placeholders the first question begins with (a string, or a list of parts)."""
        if isinstance(content, str):
            tokens = "|".join(re.escape(t) for t in (self.config.video_token, self.config.image_token))
            match = re.match(rf"\s*(?:(?:{tokens})\s*)+", content)
            if match:
                return match.group(0)
        else:
            lead = []
            for part in content:
                if part.get("type") == "text":
                    break
                lead.append(part)
            if lead:
                return lead
        raise PromptError(
            f"{name}: independent turns need the first question to begin with its <video>/<image> placeholders"
        )

    @staticmethod
    def _prepend(lead, content):
        if isinstance(lead, str):
            return lead + (
                content if isinstance(content, str) else " ".join(p["text"] for p in content if p.get("type") == "text")
            )
        return lead + ([{"type": "text", "text": content}] if isinstance(content, str) else list(content))

    def expanded_ids(
        self,
        messages: list[dict],
        frame_counts: list[int],
        add_generation_prompt: bool = True,
        with_labels: bool = False,
        name: str = "conversation",
    ) -> tuple[list[int], list[int] | None]:
        """``(ids, labels)`` of a conversation whose visual inputs have ``frame_counts`` frames, placeholders
        expanded to their visual-token slots."""
        ids, labels = self.tokenize(messages, add_generation_prompt, with_labels)
        return self._expand(name, ids, labels, frame_counts)

    def collate(self, rows: list[dict]) -> dict:
        """Left-pad encoded rows into a batch; all their frames go into one ``pixel_values`` tensor."""
        width = max(len(row["input_ids"]) for row in rows)
        with_labels = rows[0]["labels"] is not None
        input_ids = torch.full((len(rows), width), self.tokenizer.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
        labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
        for b, row in enumerate(rows):
            length = len(row["input_ids"])
            input_ids[b, width - length :] = torch.as_tensor(row["input_ids"])
            attention_mask[b, width - length :] = 1
            if with_labels:
                labels[b, width - length :] = torch.as_tensor(row["labels"])
        batch = {"input_ids": input_ids, "attention_mask": attention_mask}
        if with_labels:
            batch["labels"] = labels
        if any("segment_ids" in row for row in rows):  # independent turns: positions and segments, padded
            batch["position_ids"] = torch.zeros((len(rows), width), dtype=torch.long)
            batch["segment_ids"] = torch.full((len(rows), width), -1, dtype=torch.long)
            for b, row in enumerate(rows):
                length = len(row["input_ids"])
                batch["position_ids"][b, width - length :] = torch.as_tensor(row.get("position_ids", range(length)))
                batch["segment_ids"][b, width - length :] = torch.as_tensor(row.get("segment_ids", [0] * length))
        for key in ("pixel_values", "vision_features"):
            stacks = [p for row in rows for p in row.get(key, ())]
            if stacks:
                if "frame_counts" in batch:
                    raise PromptError("a batch mixes rows with frames and rows with cached vision features")
                batch[key] = torch.cat(stacks)
                batch["frame_counts"] = torch.tensor([p.shape[0] for p in stacks])
        return batch

    @staticmethod
    def _frames_of(visual) -> np.ndarray:
        frames = getattr(visual, "frames", visual)
        frames = np.asarray(frames)
        return frames[None] if frames.ndim == 3 else frames

    def _expand(self, name: str, ids: list[int], labels: list[int] | None, frame_counts: list[int]):
        """Replace each placeholder by as many copies as its input (of ``frame_counts[i]`` frames) has visual tokens."""
        slots = [(i, self.placeholder_kind[t]) for i, t in enumerate(ids) if t in self.placeholder_kind]
        if len(slots) != len(frame_counts):
            kinds = ", ".join(kind for _, kind in slots) or "none"
            raise PromptError(
                f"{name} has {len(slots)} placeholders ({kinds}) but {len(frame_counts)} visual inputs were given"
            )
        out_ids, out_labels, start = [], [], 0
        for (pos, kind), frames in zip(slots, frame_counts):
            if kind == "image" and frames != 1:
                raise PromptError(f"{name}: an <image> placeholder got {frames} frames; use <video>")
            count = self.config.num_visual_tokens(frames)
            out_ids += ids[start:pos] + [ids[pos]] * count
            if labels is not None:
                out_labels += labels[start:pos] + [IGNORE_INDEX] * count
            start = pos + 1
        out_ids += ids[start:]
        if labels is not None:
            out_labels += labels[start:]
        context = self.config.context_length
        if context and len(out_ids) > context:
            raise BudgetError(
                f"{name} needs {len(out_ids)} tokens (visual included) but the LLM's context is {context}; "
                "sample fewer frames"
            )
        return out_ids, (out_labels if labels is not None else None)

    # --- token budget --------------------------------------------------------------------------------------

    def max_frames(self, reserved_tokens: int = 0, limit: int = 1024) -> int:
        """The most frames one video may have so that its visual tokens plus ``reserved_tokens`` fit the context.

        Raises :class:`BudgetError` when not even one frame fits.
        """
        context = self.config.context_length
        if not context:
            return limit
        fits = lambda t: self.config.num_visual_tokens(t) + reserved_tokens <= context  # noqa: E731
        if not fits(1):
            raise BudgetError(
                f"one frame makes {self.config.num_visual_tokens(1)} visual tokens; with {reserved_tokens} tokens "
                f"reserved for text that exceeds the LLM's context of {context}"
            )
        low, high = 1, limit
        while low < high:  # largest t with fits(t); visual tokens never shrink as frames grow
            mid = (low + high + 1) // 2
            low, high = (mid, high) if fits(mid) else (low, mid - 1)
        return low
