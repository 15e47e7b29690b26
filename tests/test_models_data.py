"""Procedural scenes and the analytic checker (models.data, models.checker)."""

import pytest
import torch
from scipy import ndimage

from models import checker, data


def test_batch_is_deterministic_and_per_item():
    a, ca, sa = data.make_batch(3, 12)
    b, cb, _ = data.make_batch(3, 12)
    assert torch.equal(a, b) and ca == cb
    # item i depends only on (seed, i): a sub-range equals the same slice of a larger batch
    c, cc, _ = data.make_batch(3, 4, start=5)
    assert torch.equal(c, a[5:9]) and cc == ca[5:9]
    d, _, _ = data.make_batch(4, 12)
    assert not torch.equal(a, d)
    assert a.shape == (12, 3, 64, 64) and a.dtype == torch.float32
    assert a.min() >= -1 and a.max() <= 1


def test_iter_batches_continues_the_stream():
    it = data.iter_batches(7, 5)
    first, second = next(it), next(it)
    whole, captions, _ = data.make_batch(7, 10)
    assert torch.equal(torch.cat([first[0], second[0]]), whole)
    assert first[1] + second[1] == captions


def test_captions_parse_back_and_use_only_vocab():
    _, captions, scenes = data.make_batch(11, 400)
    vocab = set(data.VOCAB)
    n_objects = set()
    for cap, scene in zip(captions, scenes):
        assert set(cap.split()) <= vocab, cap
        parsed = data.parse_caption(cap)
        assert data.caption(parsed) == cap
        n_objects.add(len(parsed))
        for p, o in zip(parsed, scene.objects):
            assert (p.shape, p.colour) == (o.shape, o.colour)
            assert p.size in (None, o.size) and p.position in (None, o.position)
        if len(scene.objects) == 1:  # one-object captions always say size and position
            assert parsed[0].size and parsed[0].position
        else:
            assert scene.objects[0].colour != scene.objects[1].colour
            assert scene.objects[0].position != scene.objects[1].position
    assert n_objects == {1, 2}


def test_caption_examples_and_errors():
    objs = data.parse_caption("a large red circle at the top left")
    assert [(o.size, o.colour, o.shape, o.position) for o in objs] == [("large", "red", "circle", "top left")]
    objs = data.parse_caption("a small blue square and a yellow triangle in the centre")
    assert [(o.size, o.colour, o.shape, o.position) for o in objs] == [
        ("small", "blue", "square", None),
        (None, "yellow", "triangle", "centre"),
    ]
    with pytest.raises(ValueError, match="cannot parse"):
        data.parse_caption("a purple hexagon")


def test_all_attribute_values_occur():
    _, _, scenes = data.make_batch(5, 600)
    objs = [o for s in scenes for o in s.objects]
    assert {o.shape for o in objs} == set(data.SHAPES)
    assert {o.colour for o in objs} == set(data.COLOUR_NAMES)
    assert {o.size for o in objs} == set(data.SIZES)
    assert {o.position for o in objs} == set(data.POSITIONS)


def test_pil_round_trip():
    x, _, _ = data.make_batch(0, 1)
    back = data.from_pil(data.to_pil(x[0]))
    assert back.shape == (3, 64, 64)
    assert (back - x[0]).abs().max() <= 1.0 / 127.5 + 1e-6


def test_checker_on_clean_images():
    x, captions, _ = data.make_batch(20_000, 300)  # held out from the VAE's training stream (seed 0)
    acc = checker.accuracy(x, captions)
    assert acc["match"] >= 0.98, acc


def test_checker_rejects_wrong_captions_and_reads_pil():
    x, captions, scenes = data.make_batch(21_000, 40)
    for img, scene in zip(x, scenes):
        o = scene.objects[0]
        other = [c for c in data.COLOUR_NAMES if c not in {s.colour for s in scene.objects}][0]
        wrong = data.caption([data.ObjectSpec(o.shape, other, o.size, o.position)])
        assert not checker.matches(img, wrong)
    assert checker.matches(data.to_pil(x[0]), captions[0])
    scores = checker.attribute_scores(x[0], captions[0])
    assert scores["all"] and scores["colour"] == 1.0 and scores["count"]


def test_checker_degrades_gracefully_on_blur():
    x, captions, _ = data.make_batch(22_000, 200)
    blurred = torch.from_numpy(ndimage.gaussian_filter(x.numpy(), sigma=(0, 0, 1.0, 1.0)))
    assert checker.accuracy(blurred, captions)["match"] >= 0.95
    flat = torch.full_like(x[:1], -0.8)  # nothing drawn: no object found, nothing matches
    assert not checker.matches(flat[0], captions[0])
