"""Tokenizer, text encoder, U-Net and guidance wrappers (no training; tiny random networks)."""

import json

import pytest
import torch

from models import data
from models.guidance import CFGDenoiser, InpaintDenoiser, cfg_combine
from models.text import TextEncoder, TextEncoderConfig, Tokenizer
from models.unet import DiffusionModel, UNetConfig, timestep_embedding




def tiny_config(**kw) -> UNetConfig:
    text = {"vocab": list(data.VOCAB), "max_length": 24, "dim": 32, "layers": 1, "heads": 2, "mlp_ratio": 2}
    return UNetConfig(channels=(16, 32), groups=8, heads=2, time_dim=64, text=text, **kw)


def randomize(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give the zero-initialised output layers weights, so every path of the network is live."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g))
    return model.eval()


# ------------------------------------------------------------------------------------------- tokenizer


def test_tokenizer_words_unk_case_punctuation():
    tok = Tokenizer()
    ids = tok.encode("A Large RED circle, at the top-left!")
    words = [tok.vocab[i] for i in ids]
    assert words == ["<bos>", "a", "large", "red", "circle", "at", "the", "top", "left"]
    unk = tok.encode("a purple hexagon 3d ✓")
    assert [tok.vocab[i] for i in unk] == ["<bos>", "a", "<unk>", "<unk>", "<unk>"]  # never a crash


def test_tokenizer_padding_truncation_and_null_prompt():
    tok = Tokenizer(max_length=8)
    ids, mask = tok(["a red circle", "", " ".join(["red"] * 30)])
    assert ids.shape == mask.shape == (3, 8)
    assert mask[0].tolist() == [True] * 4 + [False] * 4
    assert (ids[0, 4:] == tok.pad_id).all()
    assert mask[1].tolist() == [True] + [False] * 7 and ids[1, 0] == tok.bos_id  # "" = the null prompt
    assert mask[2].all()  # truncated to max_length


def test_every_grammar_caption_fits_without_unknowns():
    tok = Tokenizer()
    for i in range(200):
        cap = data.caption(data.scene_for(7, i))
        ids = tok.encode(cap)
        assert tok.unk_id not in ids and len(ids) == len(cap.split()) + 1 <= tok.max_length


def test_text_encoder_shapes_and_padding_mask():
    enc = TextEncoder(TextEncoderConfig(dim=32, layers=1, heads=2)).eval()
    emb, mask = enc(["a red circle", "a small blue ring at the top left"])
    assert emb.shape == (2, 24, 32) and mask.shape == (2, 24)
    assert mask.sum(1).tolist() == [4, 9]


# ---------------------------------------------------------------------------------------------- U-Net


def test_unet_shapes_any_latent_size():
    model = randomize(DiffusionModel(tiny_config()))
    for h, w in [(8, 8), (4, 12), (9, 5)]:
        x = torch.randn(2, 4, h, w)
        out = model(x, torch.tensor([10.0, 900.0]), prompts=["a red circle", ""])
        assert out.shape == x.shape and torch.isfinite(out).all()
    with pytest.raises(ValueError, match="latents"):
        model(torch.randn(1, 3, 8, 8), torch.tensor([1.0]), prompts=["a"])


def test_cross_attention_depends_on_context_not_on_padding():
    model = randomize(DiffusionModel(tiny_config()))
    x = torch.randn(1, 4, 8, 8)
    t = torch.tensor([500.0])
    with torch.no_grad():
        a = model(x, t, prompts=["a large red circle at the top left"])
        b = model(x, t, prompts=["a small blue ring at the bottom right"])
        ctx, mask = model.encode_text(["a red circle"])
        c = model.unet(x, t, ctx, mask)
        ctx2 = ctx.clone()
        ctx2[:, 4:] = torch.randn_like(ctx2[:, 4:]) * 100  # padded positions: masked out
        d = model.unet(x, t, ctx2, mask)
        ctx3 = ctx.clone()
        ctx3[:, 2] += 1.0  # a real token
        e = model.unet(x, t, ctx3, mask)
    assert (a - b).abs().max() > 1e-3
    torch.testing.assert_close(c, d, atol=1e-5, rtol=1e-5)
    assert (c - e).abs().max() > 1e-4


def test_time_embedding_distinguishes_times():
    e = timestep_embedding(torch.tensor([0.0, 1.0, 999.0]), 64)
    assert e.shape == (3, 64) and (e[0] - e[1]).abs().max() > 1e-3


def test_config_json_roundtrip_and_save_load(tmp_path):
    cfg = tiny_config(prediction="flow", flow_shift=3.0, vae={"name": "v", "weights_sha256": "ab" * 32, "latent_channels": 4,
                                                               "scaling_factor": 1.5, "shift_factor": 0.1})
    d = json.loads(json.dumps(cfg.to_dict()))
    assert UNetConfig.from_dict(d) == cfg
    model = randomize(DiffusionModel(cfg))
    model.save(tmp_path / "m", dtype=None)
    loaded = DiffusionModel.load(tmp_path / "m")
    assert loaded.config == cfg and loaded.weights_sha256 == model.weights_sha256
    x, t = torch.randn(1, 4, 8, 8), torch.tensor([250.0])
    with torch.no_grad():
        torch.testing.assert_close(loaded(x, t, prompts=["a red circle"]), model(x, t, prompts=["a red circle"]))


# ------------------------------------------------------------------------------------------- guidance


def test_cfg_combine_maths():
    c, u = torch.tensor([3.0]), torch.tensor([1.0])
    assert cfg_combine(c, u, 1.0).item() == 3.0
    assert cfg_combine(c, u, 0.0).item() == 1.0
    assert cfg_combine(c, u, 4.0).item() == 9.0  # u + 4 (c − u)


def test_cfg_denoiser_one_batched_call():
    calls = []

    def inner(x, sigma, context):
        calls.append(x.shape[0])
        return x * 0 + context.view(-1, 1, 1, 1) * sigma.view(-1, 1, 1, 1)

    cond, uncond = {"context": torch.tensor([2.0, 3.0])}, {"context": torch.tensor([1.0])}
    x, sigma = torch.zeros(2, 1, 2, 2), torch.tensor([1.0, 2.0])
    out = CFGDenoiser(inner, cond, uncond, 5.0)(x, sigma)
    assert calls == [4]  # cond and uncond in one call
    expected = torch.tensor([1.0 + 5 * (2 - 1), 2.0 + 5 * (6 - 2)]).view(2, 1, 1, 1).expand(2, 1, 2, 2)
    torch.testing.assert_close(out, expected)
    calls.clear()
    out1 = CFGDenoiser(inner, cond, uncond, 1.0)(x, sigma)
    assert calls == [2]
    torch.testing.assert_close(out1, torch.tensor([2.0, 6.0]).view(2, 1, 1, 1).expand(2, 1, 2, 2))


def test_inpaint_denoiser_reimposes_known_region():
    seen = {}

    def inner(x, sigma):
        seen["x"] = x.clone()
        return torch.full_like(x, 7.0)

    known, noise = torch.ones(1, 1, 2, 2), torch.full((1, 1, 2, 2), 0.5)
    mask = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]]])
    D = InpaintDenoiser(inner, known, mask, noise)
    out = D(torch.full((1, 1, 2, 2), -9.0), torch.tensor([2.0]))
    assert seen["x"][0, 0, 0, 0] == -9.0 and (seen["x"][0, 0].flatten()[1:] == 1.0 + 2.0 * 0.5).all()
    assert out[0, 0, 0, 0] == 7.0 and (out[0, 0].flatten()[1:] == 1.0).all()
    D(torch.zeros(1, 1, 2, 2), torch.tensor([float("inf")]))  # at σ = inf the known region is the noise
    assert (seen["x"][0, 0].flatten()[1:] == 0.5).all()
