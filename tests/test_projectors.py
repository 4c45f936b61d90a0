"""Temporal projectors: shapes, token counts, gradient flow, and what frame order does to each."""

from __future__ import annotations

import pytest
import torch
from conftest import PROJECTOR_SPECS, QFORMER_TINY

from vllm_i2v.errors import ConfigError
from vllm_i2v.models.projectors import PROJECTORS, FeatureLayout, build_projector

LAYOUT = FeatureLayout(grid_h=4, grid_w=4)  # 16 patch tokens per frame, no CLS
VISION_DIM, LLM_DIM = 24, 40


def make(spec: dict, layout: FeatureLayout = LAYOUT):
    torch.manual_seed(0)
    return build_projector(spec, layout, VISION_DIM, LLM_DIM).eval()


def features(batch=2, frames=5, layout=LAYOUT, seed=0):
    return torch.randn(
        batch, frames, layout.tokens_per_frame, VISION_DIM, generator=torch.Generator().manual_seed(seed)
    )


@pytest.mark.parametrize("name", sorted(PROJECTORS))
@pytest.mark.parametrize("frames", [1, 3, 8])
def test_shapes_and_token_counts(name, frames):
    projector = make(PROJECTOR_SPECS[name])
    out = projector(features(frames=frames))
    assert out.shape == (2, projector.num_tokens(frames), LLM_DIM)


def test_token_count_formulas():
    assert make({"type": "stpool"}).num_tokens(8) == 8 + 16
    assert make({"type": "adapool", "grid": [4, 2, 2]}).num_tokens(8) == 16
    assert make({"type": "adapool", "grid": [4, 2, 2]}).num_tokens(2) == 8  # t capped by the clip
    assert make({"type": "mlp"}).num_tokens(8) == 8 * 16
    assert make({"type": "mlp", "pool_stride": 2}).num_tokens(8) == 8 * 4
    assert make(QFORMER_TINY).num_tokens(8) == 4
    assert make({**QFORMER_TINY, "mode": "frame"}).num_tokens(8) == 32
    assert (
        make({"type": "slowfast", "slow_frames": 2, "slow_grid": [2, 2], "fast_grid": [1, 1]}).num_tokens(8)
        == 2 * 4 + 8
    )
    assert make({"type": "slowfast", "slow_frames": 4, "slow_grid": [9, 9]}).num_tokens(2) == 2 * 16 + 2 * 16  # capped
    with_cls = FeatureLayout(4, 4, prefix=1)
    assert make({"type": "mlp"}, with_cls).num_tokens(3) == 3 * 17  # Video-LLaVA: CLS kept per frame


@pytest.mark.parametrize("name", sorted(PROJECTORS))
def test_gradients_reach_every_parameter_and_the_input(name):
    projector = make(PROJECTOR_SPECS[name]).train()
    x = features(frames=4).requires_grad_(True)
    projector(x).square().mean().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    for pname, param in projector.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, pname


def test_stpool_temporal_mean_ignores_frame_order_per_frame_tokens_follow_it():
    projector = make({"type": "stpool"})
    x = features(frames=6)
    perm = torch.tensor([3, 0, 5, 1, 4, 2])
    out, out_perm = projector(x), projector(x[:, perm])
    torch.testing.assert_close(out_perm[:, 6:], out[:, 6:])  # per-patch temporal means: order-blind
    torch.testing.assert_close(out_perm[:, :6], out[:, perm])  # per-frame tokens: permuted with the frames


def test_slowfast_slow_pathway_is_the_per_frame_projector_on_evenly_spaced_frames():
    slowfast = make({"type": "slowfast", "slow_frames": 3, "slow_grid": [4, 4], "fast_grid": [1, 1]})
    per_frame = make({"type": "mlp"})
    per_frame.mlp.load_state_dict(slowfast.mlp.state_dict())
    x = features(frames=7)
    out = slowfast(x)
    torch.testing.assert_close(out[:, : 3 * 16], per_frame(x[:, [0, 3, 6]]))
    fast = per_frame.mlp(x.mean(dim=2))  # a 1x1 grid: each frame's mean patch
    torch.testing.assert_close(out[:, 3 * 16 :], fast)


@pytest.mark.parametrize("mode", ["video", "frame"])
def test_qformer_temporal_embeddings_make_order_matter(mode):
    x = features(frames=6)
    perm = torch.tensor([3, 0, 5, 1, 4, 2])
    projector = make({**QFORMER_TINY, "mode": mode})
    with torch.no_grad():
        projector.frame_embeddings.weight.normal_(std=1.0)
    out, out_perm = projector(x), projector(x[:, perm])
    if mode == "frame":  # per-frame query blocks: without temporal embeddings they would just permute
        out = out.reshape(2, 6, -1, LLM_DIM)[:, perm].reshape(2, -1, LLM_DIM)
    assert not torch.allclose(out, out_perm, atol=1e-4)
    if mode == "video":  # without temporal embeddings, attention over all frames' patches is order-blind
        blind = make({**QFORMER_TINY, "temporal_embeddings": False})
        torch.testing.assert_close(blind(x), blind(x[:, perm]), atol=1e-5, rtol=1e-5)


def test_qformer_more_frames_than_embeddings():
    with pytest.raises(ConfigError, match="temporal embeddings for 4 frames"):
        make({**QFORMER_TINY, "max_frames": 4})(features(frames=5))


def test_adapool_matches_average_pooling():
    projector = make({"type": "adapool", "grid": [2, 2, 2], "mlp_depth": 1})
    x = features(batch=1, frames=4)
    volume = x.reshape(1, 4, 4, 4, VISION_DIM)  # (B, T, h, w, D)
    pooled = volume.reshape(1, 2, 2, 2, 2, 2, 2, VISION_DIM).mean(dim=(2, 4, 6)).reshape(1, 8, VISION_DIM)
    torch.testing.assert_close(projector(x), projector.mlp(pooled), atol=1e-5, rtol=1e-5)


def test_adapool_temporal_embeddings_say_when():
    x = features(batch=1, frames=4)
    reverse = torch.tensor([3, 2, 1, 0])
    for timed in (False, True):
        projector = make({"type": "adapool", "grid": [4, 2, 2], "temporal_embeddings": timed})
        if timed:
            with torch.no_grad():
                projector.time_embeddings.weight.normal_(std=1.0)
        tokens, backwards = projector(x).reshape(4, 4, -1), projector(x[:, reverse]).reshape(4, 4, -1)
        # without them, reversing the frames only reverses the token order; with them, the tokens change
        assert torch.allclose(tokens, backwards[reverse], atol=1e-5) is not timed
    assert make({"type": "adapool", "grid": [4, 2, 2], "temporal_embeddings": True})(features(frames=2)).shape[1] == 8


def test_mlp_stride_pools_each_frame():
    projector = make({"type": "mlp", "pool_stride": 2, "mlp_depth": 1})
    x = features(batch=1, frames=2)
    grid = x.reshape(1, 2, 2, 2, 2, 2, VISION_DIM).mean(dim=(3, 5)).reshape(1, 8, VISION_DIM)
    torch.testing.assert_close(projector(x), projector.mlp(grid), atol=1e-5, rtol=1e-5)


def test_pooling_projectors_refuse_cls_tokens():
    assert (
        make({"type": "slowfast", "slow_frames": 2, "slow_grid": [2, 2], "fast_grid": [1, 1]}).num_tokens(8)
        == 2 * 4 + 8
    )
    assert make({"type": "slowfast", "slow_frames": 4, "slow_grid": [9, 9]}).num_tokens(2) == 2 * 16 + 2 * 16  # capped
    with_cls = FeatureLayout(4, 4, prefix=1)
    for spec in ({"type": "adapool"}, {"type": "mlp", "pool_stride": 2}):
        with pytest.raises(ConfigError, match="vision_feature_select: patch"):
            make(spec, with_cls)(features(frames=2, layout=with_cls))


def test_unknown_projector_and_setting():
    with pytest.raises(ConfigError, match="known projectors: stpool, adapool, qformer, mlp"):
        make({"type": "perceiver"})
    with pytest.raises(ConfigError, match="projector 'stpool': pool: unknown key 'pool'"):
        make({"type": "stpool", "pool": 2})


def test_adapool_motion_tokens_say_which_way_things_moved():
    from vllm_i2v.models.projectors.adapool import motion_moments

    volume = torch.zeros(1, 2, 4, 3, 5)  # (B, D, T, h, w): channel 0 = a blob moving right, channel 1 = still
    for t in range(4):
        volume[0, 0, t, 1, t] = 1.0
    volume[0, 1, :, 0, 0] = 1.0
    moments = motion_moments(volume)  # (B, D, [x, y])
    assert moments[0, 0, 0] > 0 and moments[0, 0, 1] == 0 and moments[0, 1].abs().max() == 0
    assert motion_moments(volume.flip(-1))[0, 0, 0] < 0  # moving left
    assert motion_moments(volume[:, :, :1]).abs().max() == 0  # one frame: nothing moved
    projector = make({"type": "adapool", "grid": [4, 2, 2], "motion_tokens": True})
    x = features(batch=2, frames=4)
    assert projector(x).shape[1] == 4 * 2 * 2 + 2 == projector.num_tokens(4)
    tokens, backwards = projector(x), projector(x.flip(1))
    assert not torch.allclose(tokens[:, -2:], backwards[:, -2:])  # reversed time, reversed motion


def test_adapool_cell_motion_says_where_each_thing_moved_and_when_it_was_there():
    from vllm_i2v.models.projectors.adapool import local_motion

    xs, ys = torch.arange(7.0).view(1, 7), torch.arange(7.0).view(7, 1)
    volume = torch.zeros(1, 2, 8, 7, 7)  # channel 0: a blob moving right along row 3; channel 1: a still blob
    for t in range(8):
        volume[0, 0, t] = torch.exp(-((xs - (1 + 0.6 * t)) ** 2 + (ys - 3) ** 2) / 1.5)
        volume[0, 1, t] = torch.exp(-((xs - 5) ** 2 + (ys - 0) ** 2) / 1.5)
    when, along_x, along_y = local_motion(volume, (1, 7, 7)).split(2, dim=1)  # each (1, 2, 1, 7, 7)
    assert along_x[0, 0, 0, 3, 2:5].min() > 0.2 and along_y[0, 0, 0, 3].abs().max() < 0.1  # moving right
    assert along_x[0, 0, 0, 3, 2:5].min() > 3 * along_x[0, 1, 0, 0, 4:].abs().max()  # the still blob hardly moves
    assert when[0, 0, 0, 3, 1] < 0 < when[0, 0, 0, 3, 5]  # on the left early, on the right late
    backwards = local_motion(volume.flip(2), (1, 7, 7)).split(2, dim=1)[1]
    assert backwards[0, 0, 0, 3, 2:5].max() < -0.2  # reversed time: moving left
    projector = make({"type": "adapool", "grid": [1, 2, 2], "cell_motion": True})
    assert projector(features(frames=4)).shape == (2, 4, LLM_DIM) == (2, projector.num_tokens(4), LLM_DIM)
    with pytest.raises(ConfigError, match="exclude each other"):
        make({"type": "adapool", "cell_motion": True, "motion_tokens": True})
