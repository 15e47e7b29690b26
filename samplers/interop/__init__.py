"""Where other tools meet the library. Import these modules explicitly: their dependencies are optional.

- ``diffusers_scheduler``: ``SamplerScheduler``, any registry sampler as a diffusers scheduler (needs diffusers);
- ``diffusers_models``: a diffusers UNet / transformer and its scheduler config as a registry denoiser;
- ``kdiffusion``: a drop-in for ``k_diffusion.sampling`` (every public name, k-diffusion's signatures and noise;
  every other registry sampler as ``sample_<name>``; A1111 / ComfyUI labels);
- ``comfyui``: any registry sampler as a ComfyUI ``SAMPLER`` (the custom node's code; ComfyUI itself is imported
  only by ``node_class_mappings``);
- ``torchdiffeq_adapter``, ``torchsde_adapter``: every torchdiffeq / torchsde solver as a registry sampler
  (registered by name at start-up; the packages are imported when such a sampler runs).
"""
