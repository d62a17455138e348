"""Training of the DyStream model: autoencoder, motion-latent extraction, generator, evaluation.

    dystream train autoencoder --data DIR --val-data HELDOUT --out runs/ae
    dystream train extract --data DIR --checkpoint runs/ae/autoencoder.safetensors --out runs/latents
    dystream train generator --data DIR --latents runs/latents --out runs/gen
    dystream train evaluate --data HELDOUT --checkpoint runs/gen/model.safetensors

Multi-GPU: ``torchrun --nproc-per-node N -m dystream_ros.cli train ...`` (DDP); see ``common``.
"""
