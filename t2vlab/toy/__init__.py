"""A toy text-to-video model trained by t2vlab itself on a synthetic world of moving shapes.

``data``: the captioned clips; ``train``: the VAE, then the UNet3D with the epsilon loss;
``evaluate``: reads colour and direction off generated videos; ``decoder``: extends the VAE's decoder to
new colours (its encoder frozen); ``purple``: the LoRA of notebook 14. The trained checkpoint ships with the
package (published layout): ``TextToVideoPipeline.from_pretrained("toy")``, whose folder is
``toy_checkpoint()`` (it lives with the other embedded checkpoints in ``t2vlab.weights``).
"""

from ..weights import toy_checkpoint

__all__ = ["toy_checkpoint"]
