"""jitlab: the JiT ablations ("Back to Basics: Let Denoising Generative Models Denoise") on Lightning."""

__version__ = "0.1.0"
