"""The latent diffusion stack: procedural captioned data, an analytic checker, a KL autoencoder
(VAE), safetensors weights I/O, and (see the other modules) text encoder, U-Net and pipeline.

Import the submodules you need (``from models import data, vae``); this file stays light so that
``import models`` does not pull in torch-heavy code.
"""
