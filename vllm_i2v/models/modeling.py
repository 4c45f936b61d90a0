"""``VideoLLM``: vision tower -> temporal projector -> any transformers causal LM, as one ``PreTrainedModel``.

The processor (:mod:`vllm_i2v.models.processor`) expands every ``<video>``/``<image>`` placeholder in the
prompt into as many placeholder ids as the projector makes visual tokens; :meth:`VideoLLM.embed` puts the
visual tokens at exactly those positions (an embedding merge), so batching, left padding, attention masks,
KV caching and generation are the LLM's own.
"""

from __future__ import annotations

import inspect
from pathlib import Path

import torch
from torch import nn
from transformers import AutoModelForCausalLM, DynamicCache, GenerationConfig, PreTrainedModel
from transformers import initialization as init

from ..atomic import respect_umask
from ..errors import ConfigError, PromptError
from .attention import takes_boolean_mask, use_grouped_query_sdpa
from .configuration import VideoLLMConfig
from .loading import check_loading_info
from .lora import add_lora
from .preprocess import PreprocessSpec
from .processor import IGNORE_INDEX, common_prefix_length
from .projectors import build_projector
from .validity import TRAINABLE_INDEX, check_checkpoint
from .vision import VisionTower


class VideoLLM(PreTrainedModel):
    """A video chat model. ``forward`` returns the LLM's output (loss when ``labels`` are given);
    ``generate`` returns only the new tokens."""

    config_class = VideoLLMConfig
    base_model_prefix = ""
    main_input_name = "input_ids"
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True
    _supports_attention_backend = True

    def __init__(
        self, config: VideoLLMConfig, vision_model: nn.Module | None = None, language_model: nn.Module | None = None
    ):
        """Build from ``config`` (random weights until loaded), or around already-loaded vision/LLM modules."""
        super().__init__(config)
        self.vision_tower = VisionTower(
            config.vision_config,
            PreprocessSpec.from_dict(config.vision_preprocess),
            feature_layer=config.vision_feature_layer,
            feature_select=config.vision_feature_select,
            lora=config.vision_lora,
            model=vision_model,
            geometry=(tuple(config.vision_grid), config.vision_prefix_tokens),
        )
        self.language_model = language_model or AutoModelForCausalLM.from_config(config.text_config)
        use_grouped_query_sdpa(self.language_model)
        if config.llm_lora:
            add_lora(self.language_model, config.llm_lora)
        self.projector = build_projector(
            config.projector,
            config.feature_layout,
            vision_dim=self.vision_tower.hidden_size,
            llm_dim=config.text_config.hidden_size,
        )
        self.vision_batch_size = 64  # frames per vision-tower call: bounds activation memory on long videos
        self.reads_cached_features = False  # set while training from a feature cache (the tower does not run)
        self.post_init()

    def _init_weights(self, module):
        """Projector weights (the vision tower and LLM initialize their own)."""
        if isinstance(module, nn.Linear):
            init.normal_(module.weight, std=0.02)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            init.normal_(module.weight, std=getattr(module, "init_std", 0.02))
        elif isinstance(module, nn.LayerNorm):
            init.ones_(module.weight)
            init.zeros_(module.bias)

    def change_projector(self, settings: dict) -> None:
        """Rebuild the projector under ``settings`` (its full settings, ``type`` included), keeping its weights: only
        settings that leave the weights alone may change (e.g. adapool's pooled grid), else a one-line
        :class:`ConfigError`."""
        old = self.projector
        new = build_projector(settings, self.config.feature_layout, vision_dim=old.vision_dim, llm_dim=old.llm_dim)
        shapes = [{name: tuple(w.shape) for name, w in p.state_dict().items()} for p in (old, new)]
        if shapes[0] != shapes[1]:
            changed = {k: v for k, v in settings.items() if self.config.projector.get(k) != v}
            reshaped = sorted(k for k in shapes[0].keys() | shapes[1].keys() if shapes[0].get(k) != shapes[1].get(k))
            raise ConfigError(
                f"projector settings {changed} change its weights ({', '.join(reshaped)}); a trained projector keeps "
                "its weights, so only weight-free settings (e.g. adapool's grid) can change"
            )
        new.load_state_dict(old.state_dict())
        weight = next(old.parameters(), None)
        if weight is not None:
            new.to(device=weight.device, dtype=weight.dtype).requires_grad_(weight.requires_grad)
        self.projector = new
        self.config.projector = dict(settings)

    def get_input_embeddings(self) -> nn.Module:
        return self.language_model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.language_model.set_input_embeddings(value)

    # --- the visual path -------------------------------------------------------------------------------

    def vision_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Per-frame features ``(F, N, D_vision)``, the tower run in chunks of ``vision_batch_size`` frames."""
        return torch.cat([self.vision_tower(chunk) for chunk in pixel_values.split(self.vision_batch_size)], dim=0)

    def project(self, features: torch.Tensor, frame_counts) -> list[torch.Tensor]:
        """Visual tokens ``(M_i, D_llm)`` for each visual input, from the features of all their frames in order."""
        counts = [int(c) for c in frame_counts]
        if sum(counts) != features.shape[0]:
            raise PromptError(
                f"frame counts {counts} add up to {sum(counts)}, but {features.shape[0]} frames were given"
            )
        dtype = next(self.projector.parameters()).dtype
        return [self.projector(clip.unsqueeze(0).to(dtype))[0] for clip in features.split(counts)]

    def encode_visual(self, pixel_values: torch.Tensor, frame_counts) -> list[torch.Tensor]:
        """Vision tower then projector: visual tokens ``(M_i, D_llm)`` for each visual input."""
        return self.project(self.vision_features(pixel_values), frame_counts)

    @property
    def visual_placeholder_ids(self) -> set[int]:
        """The ids of the ``<video>`` and ``<image>`` placeholders (each slot of one becomes a visual token)."""
        return {i for i in (self.config.video_token_id, self.config.image_token_id) if i is not None}

    def visual_token_mask(self, input_ids: torch.Tensor) -> torch.Tensor:
        """True where ``input_ids`` holds a placeholder id (to be replaced by a visual token)."""
        return torch.isin(input_ids, torch.tensor(sorted(self.visual_placeholder_ids), device=input_ids.device))

    def merge(self, input_ids: torch.Tensor, visual_tokens: list[torch.Tensor]) -> torch.Tensor:
        """Token embeddings with ``visual_tokens`` (in order of appearance) put at the placeholder positions."""
        mask = self.visual_token_mask(input_ids)
        embeds = self.get_input_embeddings()(input_ids.masked_fill(mask, 0))
        num_slots = int(mask.sum())
        num_visual = sum(t.shape[0] for t in visual_tokens)
        if num_visual != num_slots:
            raise PromptError(
                f"the prompt has {num_slots} visual-token slots but {num_visual} visual tokens were given"
            )
        if not num_slots:
            return embeds
        visual = torch.cat(visual_tokens, dim=0).to(embeds.dtype)
        return embeds.masked_scatter(mask.unsqueeze(-1), visual)

    def embed(
        self, input_ids: torch.Tensor, pixel_values=None, frame_counts=None, vision_features=None
    ) -> torch.Tensor:
        """Encode the frames (or project precomputed ``vision_features``) and merge the visual tokens in.

        In distributed training, a batch without visual input still runs the visual path once on a blank
        frame, weighted by zero: under DeepSpeed ZeRO-3 every rank must gather the same parameters in the same
        order, or a text-only batch on one rank hangs the others.
        """
        blank = None
        if vision_features is not None:
            visual = self.project(vision_features, frame_counts)
        elif pixel_values is not None:
            visual = self.encode_visual(pixel_values, frame_counts)
        else:
            visual = []
            if self.training and torch.distributed.is_available() and torch.distributed.is_initialized():
                blank = self._blank_visual_tokens()  # before the embeddings, in the same order as a real batch
        embeds = self.merge(input_ids, visual)
        return embeds if blank is None else embeds + 0.0 * blank.sum().to(embeds.dtype)

    def _blank_visual_tokens(self) -> torch.Tensor:
        """Visual tokens of one blank frame, through the tower unless training reads cached features."""
        weight = next(self.projector.parameters())
        if self.reads_cached_features:
            layout = self.config.feature_layout
            features = torch.zeros(1, layout.tokens_per_frame, self.vision_tower.hidden_size, device=weight.device)
        else:
            features = self.vision_features(torch.zeros(1, 3, *self.vision_tower.input_size, device=weight.device))
        return self.project(features, [1])[0]

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        frame_counts: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        vision_features: torch.Tensor | None = None,
        segment_ids: torch.Tensor | None = None,
        **kwargs,
    ):
        """The LLM's output over the merged embeddings; ``vision_features`` (cached tower output) may stand in
        for ``pixel_values``.

        With ``labels``, logits are computed only where a label follows (the LM head over every position costs a
        fifth of a small LLM's training compute and nearly all of it is thrown away) and the loss is the LLM's own
        loss function over them; ``logits`` then holds only those positions, ``(B, K, vocab)``.
        ``segment_ids`` (``(B, L)``: -1 padding, 0 a shared prefix, k > 0 branch k; with ``position_ids``) lays
        out several conversations that share a prefix in one row: each branch attends to the prefix and to
        itself only (see :meth:`VideoLLMProcessor.encode` with ``independent_turns``).
        """
        if inputs_embeds is None:
            inputs_embeds = self.embed(input_ids, pixel_values, frame_counts, vision_features)
        if segment_ids is not None:
            attention_mask = self.branch_attention_mask(segment_ids, inputs_embeds.dtype)
        if labels is None or not self._keeps_some_logits:
            return self.language_model(
                inputs_embeds=inputs_embeds, attention_mask=attention_mask, labels=labels, **kwargs
            )
        shift_labels = nn.functional.pad(labels, (0, 1), value=IGNORE_INDEX)[:, 1:]
        positions = (shift_labels != IGNORE_INDEX).any(0).nonzero()[:, 0]
        num_items = kwargs.pop("num_items_in_batch", None)
        output = self.language_model(
            inputs_embeds=inputs_embeds, attention_mask=attention_mask, logits_to_keep=positions, **kwargs
        )
        output.loss = self.language_model.loss_function(
            logits=output.logits,
            labels=None,
            shift_labels=shift_labels[:, positions],
            vocab_size=self.language_model.config.vocab_size,
            num_items_in_batch=num_items,
        )
        return output

    @property
    def _keeps_some_logits(self) -> bool:
        """Whether the LLM's forward takes ``logits_to_keep`` (transformers' causal LMs do)."""
        return "logits_to_keep" in inspect.signature(type(self.language_model).forward).parameters

    def branch_attention_mask(self, segment_ids: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """``(B, 1, L, L)`` mask from ``segment_ids``: causal, a branch sees the shared prefix (0) and itself,
        padding (-1) sees only itself. Boolean for SDPA (True: attend), additive (0 / min) for other kernels."""
        length = segment_ids.shape[1]
        causal = torch.ones(length, length, dtype=torch.bool, device=segment_ids.device).tril()
        query, key = segment_ids[:, :, None], segment_ids[:, None, :]
        allowed = causal & (key != -1) & ((key == 0) | (key == query))
        allowed |= torch.eye(length, dtype=torch.bool, device=segment_ids.device)  # padding rows attend to themselves
        allowed = allowed[:, None]
        if takes_boolean_mask(self.language_model):
            return allowed
        return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill(
            ~allowed, torch.finfo(dtype).min
        )

    @torch.no_grad()
    def generate(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        frame_counts: torch.Tensor | None = None,
        vision_features: torch.Tensor | None = None,
        **generate_kwargs,
    ) -> torch.Tensor:
        """Generate with the LLM's ``generate`` (any generation config, ``streamer=TextIteratorStreamer``...);
        ``vision_features`` (the tower's output, computed earlier) may stand in for ``pixel_values``.

        Returns the new tokens only, shape ``(B, new_tokens)``.
        """
        inputs_embeds = self.embed(input_ids, pixel_values, frame_counts, vision_features)
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        return self.language_model.generate(
            inputs_embeds=inputs_embeds, attention_mask=attention_mask, **generate_kwargs
        )

    @torch.no_grad()
    def generate_shared_prefix(
        self, rows: list[list[int]], visual_tokens: list[list[torch.Tensor]], **generate_kwargs
    ) -> torch.Tensor:
        """Generate for several prompts (expanded ids) at once, prefilling the prefix they share only once.

        Questions about one video share everything up to the end of its visual tokens: that prefix is run
        through the LLM once and its KV cache copied to every row; only the rest of each prompt (padded on the
        left of that rest, after the prefix) is prefilled per row. ``visual_tokens[i]``: row ``i``'s visual
        tokens in order. Returns the new tokens, shape ``(B, new_tokens)``, as :meth:`generate` does.
        """
        # the ids all rows begin with; every row keeps at least one token to prefill
        shared = min([len(row) - 1 for row in rows] + [common_prefix_length(rows[0], row) for row in rows[1:]])
        first = visual_tokens[0]
        same_visual = all(
            len(v) == len(first) and all(torch.equal(a, b) for a, b in zip(v, first)) for v in visual_tokens
        )
        if not same_visual:  # placeholder ids are alike whatever they stand for: share only what precedes them
            slots = self.visual_token_mask(torch.tensor(rows[0][:shared])).nonzero()
            # a text-only prefix (a system prompt) saves less than its own forward pass costs: share nothing
            shared = 0 if len(slots) else shared
        embeds = [
            self.merge(torch.tensor([ids], device=self.device), visual) for ids, visual in zip(rows, visual_tokens)
        ]
        cache = DynamicCache(config=self.language_model.config)
        if shared:
            decoder = self.language_model.base_model  # no LM head: the prefix needs keys and values, not logits
            decoder(inputs_embeds=embeds[0][:, :shared], cache=cache, use_cache=True)
            cache.batch_repeat_interleave(len(rows))
        width = max(len(ids) for ids in rows) - shared
        dim = embeds[0].shape[-1]
        batch = embeds[0].new_zeros(len(rows), shared + width, dim)
        mask = torch.zeros(len(rows), shared + width, dtype=torch.long, device=self.device)
        batch[:, :shared], mask[:, :shared] = embeds[0][:, :shared], 1
        for b, row in enumerate(embeds):
            rest = row.shape[1] - shared
            batch[b, shared + width - rest :], mask[b, shared + width - rest :] = row[0, shared:], 1
        return self.language_model.generate(inputs_embeds=batch, attention_mask=mask, cache=cache, **generate_kwargs)

    # --- save / load --------------------------------------------------------------------------------------

    def save_pretrained(self, save_directory, **kwargs):
        """Save config, safetensors weights and the LLM's generation config (files readable as the umask says:
        transformers writes weight shards through private temporary files, mode 0600)."""
        super().save_pretrained(save_directory, **kwargs)
        self.language_model.generation_config.save_pretrained(save_directory)
        respect_umask(save_directory)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        """Load any VideoLLM checkpoint folder: full, trainable-only (with its chain of bases) or a parts bundle
        (the bundled model among them). Any missing, unexpected or mismatched weight is a :class:`CheckpointError`;
        a broken folder is one too, before anything loads."""
        path = Path(pretrained_model_name_or_path)
        if path.is_dir():
            check_checkpoint(path)
            if (path / TRAINABLE_INDEX).is_file():
                from .checkpoint import load_model  # its loader builds on this one

                return load_model(path, **kwargs)
        return_info = kwargs.pop("output_loading_info", False)
        kwargs["ignore_mismatched_sizes"] = True  # report mismatches (raised below, by name) instead of a bare error
        model, info = super().from_pretrained(pretrained_model_name_or_path, *args, output_loading_info=True, **kwargs)
        check_loading_info(pretrained_model_name_or_path, "VideoLLM", info)
        try:  # the LLM's own generation defaults (eos ids, sampling settings), saved beside the weights
            model.language_model.generation_config = GenerationConfig.from_pretrained(pretrained_model_name_or_path)
        except OSError:
            pass
        return (model, info) if return_info else model
