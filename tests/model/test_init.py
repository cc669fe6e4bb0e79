"""The plane-sweep initialisation: seeded, exercising every weight, and seeing depth without training."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from harness.data.scenes import scene_views
from harness.data.synthetic import SceneSpec, render_scene
from harness.data.views import make_feed
from harness.model.checkpoint import state_dict_digest
from harness.model.init import FEATURE_GAIN, plane_sweep_init
from harness.model.mvsnet import MVSNet

CONVOLUTIONS = (nn.Conv2d, nn.Conv3d, nn.ConvTranspose3d)
SEED_NUM_DEPTH = 192
SEED_INTERVAL_SCALE = 1.06


@pytest.fixture(scope="module")
def seed_case():
    """The source article's evaluation shape: 3 views at 512x640, D=192, interval scale 1.06."""
    scene = render_scene(SceneSpec(seed=0, num_views=3, height=512, width=640))
    feed = make_feed(scene_views(scene), num_depth=SEED_NUM_DEPTH, interval_scale=SEED_INTERVAL_SCALE)
    model = plane_sweep_init(MVSNet(), seed=0)
    with torch.no_grad():
        outputs = model(**feed)
    return scene, feed, outputs


# ---------------------------------------------------------------- determinism


def test_plane_sweep_init_is_deterministic_for_a_seed():
    first = plane_sweep_init(MVSNet(), seed=5)
    torch.manual_seed(123)  # the global RNG must not matter
    second = plane_sweep_init(MVSNet(), seed=5)
    assert state_dict_digest(first) == state_dict_digest(second)


def test_plane_sweep_init_overwrites_whatever_the_model_held():
    torch.manual_seed(1)
    a = MVSNet()
    torch.manual_seed(2)
    b = MVSNet()
    assert state_dict_digest(a) != state_dict_digest(b)
    assert state_dict_digest(plane_sweep_init(a, seed=4)) == state_dict_digest(plane_sweep_init(b, seed=4))


def test_plane_sweep_init_differs_across_seeds_in_the_noise_only():
    a = plane_sweep_init(MVSNet(), seed=0).state_dict()
    b = plane_sweep_init(MVSNet(), seed=1).state_dict()
    differing = {k for k in a if not torch.equal(a[k], b[k])}
    conv_weights = {k for k in a if k.endswith("weight") and a[k].dim() >= 4}
    assert differing == conv_weights  # every convolution draws its own noise; batch norm is fixed
    # The designed parts are the same for every seed.
    assert torch.equal(a["feature.feature.weight"][:3], b["feature.feature.weight"][:3])
    assert torch.equal(a["cost_regularization.conv0.conv.weight"][0], b["cost_regularization.conv0.conv.weight"][0])


def test_plane_sweep_init_returns_the_same_model_in_eval_mode():
    model = MVSNet().train()
    result = plane_sweep_init(model, seed=0)
    assert result is model
    assert not any(module.training for module in model.modules())


# ---------------------------------------------------------------- structure of the weights


def test_every_convolution_weight_is_used_by_every_output_and_input_channel():
    model = plane_sweep_init(MVSNet(), seed=0)
    dead = []
    for name, module in model.named_modules():
        if isinstance(module, CONVOLUTIONS):
            weight = module.weight.detach()
            out_dim, in_dim = (1, 0) if isinstance(module, nn.ConvTranspose3d) else (0, 1)
            per_out = weight.abs().transpose(0, out_dim).reshape(weight.shape[out_dim], -1).sum(1)
            per_in = weight.abs().transpose(0, in_dim).reshape(weight.shape[in_dim], -1).sum(1)
            if bool((per_out == 0).any()) or bool((per_in == 0).any()):
                dead.append(name)
    assert dead == []


def test_batch_norm_layers_are_the_identity_in_eval_mode():
    model = plane_sweep_init(MVSNet(), seed=0)
    x2 = torch.randn(2, 8, 5, 6, generator=torch.Generator().manual_seed(0))
    x3 = torch.randn(1, 8, 4, 5, 6, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(model.feature.conv0.bn(x2), x2, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(model.cost_regularization.conv0.bn(x3), x3, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(model.cost_regularization.conv11[1](x3), x3, rtol=1e-6, atol=1e-6)
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            assert int(module.num_batches_tracked) == 0


def test_feature_net_carries_the_rgb_image_in_its_first_three_channels():
    model = plane_sweep_init(MVSNet(), seed=0)
    colour = torch.tensor([0.2, 0.5, 0.8])
    image = colour.view(1, 3, 1, 1).expand(1, 3, 128, 128).contiguous()
    with torch.no_grad():
        features = model.feature(image)
    # Away from the zero-padded border (receptive field ~5 feature pixels), channel c = gain x colour c.
    interior = features[0, :3, 6:-6, 6:-6]
    expected = (FEATURE_GAIN * colour).view(3, 1, 1).expand_as(interior)
    torch.testing.assert_close(interior, expected, rtol=1e-5, atol=1e-5)


def test_probability_peaks_at_the_lowest_variance_hypothesis():
    model = plane_sweep_init(MVSNet(), seed=0)
    # A variance volume that is zero on plane 5 and large elsewhere (feature resolution 16x16).
    variance = torch.full((1, 32, 16, 16, 16), 0.05)
    variance[:, :, 5] = 0.0
    with torch.no_grad():
        prob = torch.softmax(model.cost_regularization(variance).squeeze(1), dim=1)
    assert bool((prob.argmax(dim=1) == 5).all())
    assert float(prob[:, 5].min()) > 0.5


# ---------------------------------------------------------------- the seed case: it sees depth


def test_depth_map_varies_by_more_than_one_depth_interval(seed_case):
    scene, _, outputs = seed_case
    interval = scene.depth_interval * SEED_INTERVAL_SCALE
    assert float(outputs["depth"].std()) > interval


def test_confidence_is_well_above_the_flat_volume_value(seed_case):
    _, _, outputs = seed_case
    flat = 4.0 / SEED_NUM_DEPTH
    assert float(outputs["photometric_confidence"].mean()) > 5 * flat


def test_depth_map_follows_the_ground_truth(seed_case):
    # Median error measured 2.3 mm (one interval is 2.65 mm); the plane sweep is not exact everywhere.
    scene, _, outputs = seed_case
    interval = scene.depth_interval * SEED_INTERVAL_SCALE
    error = (outputs["depth"][0] - scene.depth)[scene.mask].abs()
    assert float(error.median()) < 3 * interval
    assert float((error < 4 * interval).float().mean()) > 0.5


def test_depth_stays_inside_the_hypothesis_range(seed_case):
    _, feed, outputs = seed_case
    depth_values = feed["depth_values"]
    assert float(outputs["depth"].min()) >= float(depth_values.min())
    assert float(outputs["depth"].max()) <= float(depth_values.max())
