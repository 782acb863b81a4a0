"""The training envelope and its gate: maxima, the gate's limits, bad envelopes."""

import numpy as np
import pytest
import torch

from nero.data.preprocess import Preprocessing
from nero.explain.attribution import HeatmapRequest, compute_heatmap, compute_heatmaps
from nero.explain.envelope import (
    Envelope,
    EnvelopeError,
    EnvelopeRecorder,
    envelope_gate,
    fit_envelope,
    gate_points,
)
from nero.model.classifier import build_model, find_head
from tests.helpers import random_pngs

SIZE = 32
PLAIN = Preprocessing(SIZE, "none")


@pytest.fixture(scope="module")
def model_and_head():
    torch.manual_seed(0)
    model = build_model("resnet18", 2, SIZE).eval()
    _, head = find_head(model, SIZE)
    return model, head


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    root = tmp_path_factory.mktemp("envelope-images")
    paths = random_pngs(root, 7, 40)
    (root / "broken.png").write_bytes(b"not an image")
    return paths + [root / "broken.png"], [0, 1, 0, 0, 1, 1, 0, 1]


def test_envelope_is_the_per_class_maximum_of_each_unit(model_and_head, images):
    model, _ = model_and_head
    paths, labels = images
    envelope = fit_envelope(model, paths, labels, 2, PLAIN, batch_size=3)
    assert len(gate_points(model)) == 9  # the stem's max-pool and the 8 residual blocks
    # At 32 px layer3 (2×2) and layer4 (1×1) are too small to say where: left out.
    assert envelope.points == ("maxpool", "layer1.0", "layer1.1", "layer2.0", "layer2.1")
    np.testing.assert_array_equal(envelope.counts, [4, 3])  # the broken one left out
    # Independently: one forward pass per readable image, maxima by class (broken one left out).
    from nero.data.images import read_image

    outputs = {name: [] for name in envelope.points}
    handles = [
        model.get_submodule(n).register_forward_hook(
            lambda _m, _i, o, n=n: outputs[n].append(o.detach())
        )
        for n in envelope.points
    ]
    with torch.no_grad():
        for path in paths[:-1]:
            model(PLAIN(read_image(path)).unsqueeze(0))
    for handle in handles:
        handle.remove()
    for name in envelope.points:
        stacked = torch.cat(outputs[name]).numpy()
        for c in range(2):
            rows = [k for k, label in enumerate(labels[:-1]) if label == c]
            np.testing.assert_allclose(
                envelope.maxima[name][c], stacked[rows].max(0), rtol=1e-4, atol=1e-5
            )


def test_envelope_round_trips_and_is_checked_against_the_model(model_and_head, images, tmp_path):
    model, _ = model_and_head
    envelope = fit_envelope(model, *images, 2, PLAIN)
    envelope.save(tmp_path / "envelope.npz")
    again = Envelope.load(tmp_path / "envelope.npz")
    assert again.points == envelope.points
    for name in envelope.points:
        np.testing.assert_array_equal(again.maxima[name], envelope.maxima[name])
    with pytest.raises(EnvelopeError, match="3 classes"):
        again.check(model, 3)
    densenet = build_model("densenet121", 2, SIZE)
    with pytest.raises(EnvelopeError, match="gate points"):
        again.check(densenet, 2)
    efficientnet = build_model("efficientnet_b0", 2, SIZE)
    with pytest.raises(EnvelopeError, match="no gate points"):
        fit_envelope(efficientnet, *images, 2, PLAIN)
    with pytest.raises(EnvelopeError, match="0..1"):
        fit_envelope(model, images[0], [0, 1, 2, 0, 1, 1, 0, 1], 2, PLAIN)
    with pytest.raises(EnvelopeError, match="one label per"):
        fit_envelope(model, images[0], [0, 1], 2, PLAIN)


def _constant_envelope(envelope: Envelope, value: float) -> Envelope:
    return Envelope(
        {n: np.full_like(m, value) for n, m in envelope.maxima.items()}, envelope.counts
    )


def test_the_gate_between_its_limits(model_and_head, images):
    model, head = model_and_head
    envelope = fit_envelope(model, *images, 2, PLAIN)
    x = torch.randn(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(5))
    deviation = np.random.default_rng(0).normal(0, 0.1, head.in_features)
    args = (model, head, x, "resnet18", "ood", 0, deviation)
    plain = compute_heatmap(*args)
    # An envelope of zeros lets every activation through: the plain OOD heatmap.
    open_gate = compute_heatmap(*args, envelope=_constant_envelope(envelope, 0.0))
    np.testing.assert_allclose(open_gate.relevance, plain.relevance, rtol=1e-5, atol=1e-12)
    # An envelope above everything stops all relevance at the first gate.
    shut = compute_heatmap(*args, envelope=_constant_envelope(envelope, 1e9))
    assert not shut.relevance.any() and shut.conservation == 0
    gated = compute_heatmap(*args, envelope=envelope)
    assert 0 <= gated.conservation <= plain.conservation + 1e-6
    assert "envelope gate" in gated.rule_set and "envelope" in gated.note
    # Rows in the same batch that are not OOD heatmaps are not gated.
    cls_alone = compute_heatmap(model, head, x, "resnet18", "class")
    cls, ood = compute_heatmaps(
        model,
        head,
        x,
        "resnet18",
        [HeatmapRequest("class"), HeatmapRequest("ood", 0, deviation)],
        envelope=envelope,
    )
    np.testing.assert_allclose(cls.relevance, cls_alone.relevance, rtol=1e-4, atol=1e-9)
    np.testing.assert_allclose(ood.relevance, gated.relevance, rtol=1e-4, atol=1e-12)
    # The forward pass is unchanged by the gate.
    with torch.no_grad(), envelope_gate(model, envelope, [0]):
        gated_logits = model(x)
    with torch.no_grad():
        np.testing.assert_array_equal(gated_logits.numpy(), model(x).numpy())


def test_an_envelope_for_another_input_size_is_refused(model_and_head, images):
    model, head = model_and_head
    envelope = fit_envelope(model, *images, 2, PLAIN)
    x = torch.randn(1, 3, 2 * SIZE, 2 * SIZE)
    deviation = np.ones(head.in_features)
    with pytest.raises(EnvelopeError, match="input size"):
        compute_heatmap(model, head, x, "resnet18", "ood", 0, deviation, envelope=envelope)
    with pytest.raises(ValueError, match="centroid's class"):
        compute_heatmap(
            model, head, x[..., :SIZE, :SIZE], "resnet18", "ood", None, deviation, envelope=envelope
        )


def test_recorder_skips_rows_that_are_not_training_images(model_and_head):
    model, _ = model_and_head
    images = torch.randn(4, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(3))
    with torch.no_grad(), EnvelopeRecorder(model, 2) as recorder:
        model(images)
        recorder.update([0, -1, 1, -1])  # rows 1 and 3: OOD or test images
        with pytest.raises(EnvelopeError, match="0..1"):
            recorder.update([0, 2, 1, 0])
    with torch.no_grad(), EnvelopeRecorder(model, 2) as alone:
        model(images[[0, 2]])
        alone.update([0, 1])
    np.testing.assert_array_equal(recorder.counts, [1, 1])
    mixed, separate = recorder.result(), alone.result()
    assert mixed.points == separate.points
    for name in mixed.points:
        np.testing.assert_array_equal(mixed.maxima[name], separate.maxima[name])
    assert not any(m._forward_hooks for m in model.modules())  # hooks removed on exit


def test_recorders_of_two_model_copies_fold_into_the_one_envelope(model_and_head):
    """What the Ray engine's actors record, folded on the driver, is the envelope of all."""
    model, _ = model_and_head
    images = torch.randn(6, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(5))
    labels = np.array([0, 1, 0, -1, 1, 1])
    with torch.no_grad(), EnvelopeRecorder(model, 2) as whole:
        model(images)
        whole.update(labels)
    driver = EnvelopeRecorder(model, 2)
    for rows in ([0, 1, 2], [3, 4, 5]):  # two actors, each a batch
        with torch.no_grad(), EnvelopeRecorder(model, 2) as actor:
            model(images[rows])
            actor.update(labels[rows])
            driver.fold(actor.take())
            assert not actor.counts.any()  # taken: the next batch starts afresh
    np.testing.assert_array_equal(driver.counts, whole.counts)
    folded, direct = driver.result(), whole.result()
    for name in direct.points:
        np.testing.assert_array_equal(folded.maxima[name], direct.maxima[name])
    with pytest.raises(EnvelopeError, match="3 classes"):
        driver.fold({"counts": np.zeros(3, np.int64)})


@pytest.mark.parametrize(
    ("arch", "gated"),
    [("vgg11_bn", True), ("densenet121", True), ("efficientnet_b0", False)],
)
def test_every_family_with_gate_points_gets_a_gated_ood_heatmap(arch, gated):
    torch.manual_seed(0)
    model = build_model(arch, 2, SIZE).eval()
    _, head = find_head(model, SIZE)
    assert bool(gate_points(model)) == gated
    images = torch.randn(3, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))
    deviation = np.random.default_rng(0).normal(0, 0.1, head.in_features)
    if not gated:
        heat = compute_heatmap(model, head, images[:1], arch, "ood", 0, deviation)
        assert "envelope" not in heat.rule_set and "no training envelope" in heat.note
        return
    with torch.no_grad(), EnvelopeRecorder(model, 2) as recorder:
        model(images[1:])
        recorder.update([0, 1])
    envelope = recorder.result()
    plain = compute_heatmap(model, head, images[:1], arch, "ood", 0, deviation)
    heat = compute_heatmap(model, head, images[:1], arch, "ood", 0, deviation, envelope=envelope)
    assert heat.rule_set.endswith("+ envelope gate") and heat.relevance.shape == (SIZE, SIZE)
    assert 0 <= heat.conservation <= plain.conservation + 1e-6
    assert not np.allclose(heat.relevance, plain.relevance)


def test_an_input_too_small_to_localise_gets_no_envelope(model_and_head):
    model, _ = model_and_head
    with torch.no_grad(), EnvelopeRecorder(model, 2) as recorder:
        model(torch.randn(2, 3, 8, 8))  # the stem's max-pool is 2×2 already
        recorder.update([0, 1])
    with pytest.raises(EnvelopeError, match="too small"):
        recorder.result()
