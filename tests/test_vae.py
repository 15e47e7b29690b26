"""The KL autoencoder (models.vae), its shipped weights and its training script."""

import json

import pytest
import torch

from models import data
from models import io as mio
from models.vae import VAE, VAEConfig, psnr

# Measured on the shipped weights (docs/models.md), minus a margin for 64 images and platforms.
SHIPPED_PSNR_FLOOR_DB = 28.0


def _tiny(**kw) -> VAEConfig:
    return VAEConfig(**{"channels": (8, 8, 16), "groups": 4, **kw})


@pytest.mark.parametrize("latent_channels", [4, 16])
def test_shapes(latent_channels):
    torch.manual_seed(0)
    vae = VAE(VAEConfig(latent_channels=latent_channels)).eval()
    x, _, _ = data.make_batch(0, 1)
    with torch.no_grad():
        post = vae.encode(x)
        assert post.mean.shape == post.logvar.shape == (1, latent_channels, 8, 8)
        assert post.sample(torch.Generator().manual_seed(1)).shape == post.mode().shape
        assert post.kl().shape == (1,)
        assert vae.decode(post.mode()).shape == x.shape
        lat = vae.to_latent(x)
        assert lat.shape == (1, latent_channels, 8, 8)
        y = vae.from_latent(lat)
        assert y.shape == x.shape and y.min() >= -1 and y.max() <= 1
        # other sizes that are multiples of 8 work
        assert vae.to_latent(torch.zeros(1, 3, 32, 48)).shape == (1, latent_channels, 4, 6)
    assert vae.latent_shape(64, 64) == (latent_channels, 8, 8)


def test_size_not_multiple_of_8():
    vae = VAE(_tiny())
    with pytest.raises(ValueError, match=r"width 60 is not a positive multiple of 8 \(nearest valid: 56 or 64\)"):
        vae.encode(torch.zeros(1, 3, 64, 60))
    with pytest.raises(ValueError, match=r"height 5 .*nearest valid: 8"):
        vae.latent_shape(5, 64)


def test_latent_channel_mismatch():
    vae = VAE(_tiny(latent_channels=4))
    with pytest.raises(ValueError, match="has 16 channels but this VAE .* has 4 latent channels"):
        vae.from_latent(torch.zeros(1, 16, 8, 8))


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_latents_are_refused(bad):
    # a NaN latent decodes to NaN pixels, which to_pil saves as black without a word
    vae = VAE(_tiny(latent_channels=4)).eval()
    z = torch.zeros(1, 4, 8, 8)
    z[0, 1, 2, 3] = bad
    with pytest.raises(ValueError, match="scaled latent holds NaN or infinite values, which decode to NaN pixels"):
        vae.from_latent(z)
    with pytest.raises(ValueError, match="latent holds NaN or infinite values"):
        vae.decode(z)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_other_dtypes_than_the_weights_are_refused_by_name(dtype):
    vae = VAE(_tiny(latent_channels=4)).eval()
    with pytest.raises(TypeError, match=rf"images: {dtype}, but this VAE's weights are torch.float32; pass "
                                        rf"images.to\(torch.float32\)"):
        vae.encode(torch.zeros(1, 3, 64, 64, dtype=dtype))
    with pytest.raises(TypeError, match=rf"scaled latent: {dtype}, but .* pass latent.to\(torch.float32\)"):
        vae.from_latent(torch.zeros(1, 4, 8, 8, dtype=dtype))
    with torch.no_grad():
        if dtype == torch.bfloat16:  # under autocast torch casts the inputs and weights itself, as it always did
            with torch.autocast("cpu", dtype=dtype):
                assert vae.from_latent(torch.zeros(1, 4, 8, 8, dtype=dtype)).dtype == dtype
        # the VAE in that dtype takes them
        assert vae.to(dtype).from_latent(torch.zeros(1, 4, 8, 8, dtype=dtype)).dtype == dtype


def test_scaling_lives_in_to_from_latent():
    torch.manual_seed(0)
    vae = VAE(_tiny(shift_factor=0.5, scaling_factor=2.0)).eval()
    x, _, _ = data.make_batch(1, 2)
    with torch.no_grad():
        z = vae.encode(x).mode()
        assert torch.allclose(vae.to_latent(x), (z - 0.5) * 2.0)
        assert torch.allclose(vae.from_latent(vae.to_latent(x)), vae.decode(z).clamp(-1, 1), atol=1e-5)


def test_save_load_round_trip(tmp_path):
    torch.manual_seed(0)
    vae = VAE(_tiny(latent_channels=16, name="t")).eval()
    cfg = vae.save(tmp_path / "v")
    assert vae.weights_sha256 == cfg["weights_sha256"]
    back = VAE.load(tmp_path / "v")
    assert back.config == vae.config and back.weights_sha256 == vae.weights_sha256
    x, _, _ = data.make_batch(2, 2)
    with torch.no_grad():  # fp16 storage
        assert torch.allclose(back.to_latent(x), vae.to_latent(x), atol=2e-2)


def test_config_that_does_not_fit_the_weights(tmp_path):
    VAE(_tiny()).save(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg["latent_channels"] = 16
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(mio.ConfigMismatchError, match=r"encoder\.conv_out\.weight: file \(8, 16, 3, 3\) vs model \(32, 16, 3, 3\)"):
        VAE.load(tmp_path)
    cfg["dec_res_blocks"] = 3
    cfg["latent_channels"] = 4
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(mio.ModelLoadError, match="missing keys decoder.blocks"):
        VAE.load(tmp_path)


def test_missing_weights_folder_says_how_to_make_them(tmp_path):
    with pytest.raises(mio.ModelLoadError, match="python -m models.train_vae"):
        VAE.load(tmp_path / "absent")


def test_shipped_weights_reconstruct_held_out_images():
    vae = VAE.load()
    assert (mio.sha256_file(vae_folder() / "model.safetensors")) == vae.weights_sha256
    assert vae.latent_channels == 4 and vae.downsample == 8
    x, _, _ = data.make_batch(1_000_003, 64, start=5000)  # held-out stream (training used seed 0)
    with torch.no_grad():
        lat = vae.to_latent(x)
        y = vae.from_latent(lat)
    assert psnr(y, x).mean().item() >= SHIPPED_PSNR_FLOOR_DB
    # scale and shift were estimated so that latents are roughly standardised
    assert abs(lat.mean().item()) < 0.3 and 0.7 < lat.std().item() < 1.3


def vae_folder():
    from models.vae import DEFAULT_FOLDER

    return DEFAULT_FOLDER


def test_training_resumes_exactly(tmp_path):
    from models import train_vae

    common = ["--steps", "4", "--batch-size", "2", "--channels", "8,8,8", "--warmup", "1", "--threads", "1",
              "--scale-samples", "8", "--eval-samples", "4", "--checkpoint-minutes", "1000"]
    train_vae.main(["--out", str(tmp_path / "a"), *common])
    train_vae.main(["--out", str(tmp_path / "b"), *common, "--stop-after", "2"])
    assert (tmp_path / "b" / "checkpoint.pt").is_file() and not (tmp_path / "b" / "model.safetensors").exists()
    train_vae.main(["--out", str(tmp_path / "b"), *common, "--resume"])
    assert not (tmp_path / "b" / "checkpoint.pt").exists()
    a, b = VAE.load(tmp_path / "a"), VAE.load(tmp_path / "b")
    assert a.config.scaling_factor == pytest.approx(b.config.scaling_factor, rel=1e-5)
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(va, vb), k
