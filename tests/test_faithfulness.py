"""The deletion test gives the right sign where the answer is known."""

import numpy as np
from PIL import Image

from nero.explain.faithfulness import deletion_area


def scene(seed: int = 0) -> tuple[Image.Image, np.ndarray]:
    """A grey image with one bright square: the only thing that makes it 'unusual'."""
    rng = np.random.default_rng(seed)
    pixels = np.full((64, 64, 3), 110, np.uint8) + rng.integers(0, 6, (64, 64, 3), dtype=np.uint8)
    pixels[20:36, 30:46] = 250
    truth = np.zeros((64, 64))
    truth[20:36, 30:46] = 1.0
    return Image.fromarray(pixels), truth


def unusualness(images) -> np.ndarray:
    """The known score: how many pixels are far brighter than the grey background."""
    return np.array([float((np.asarray(im)[..., 0] > 200).sum()) + 1.0 for im in images])


def test_a_map_on_the_cause_lowers_the_score_faster_than_random_or_wrong_maps():
    image, truth = scene()
    right = deletion_area(
        unusualness, image, truth + 1e-3 * np.random.default_rng(1).random(truth.shape)
    )
    random = deletion_area(unusualness, image, np.random.default_rng(2).random(truth.shape))
    wrong = np.zeros_like(truth)
    wrong[:16, :16] = 1.0  # the opposite corner
    elsewhere = deletion_area(unusualness, image, wrong)
    assert right < random < elsewhere + 1e-9
    assert random - right > 0.2  # clearly faster, not a rounding difference
