"""normalization_ablation: per-pixel mean (paper) against per-channel and ImageNet stats."""

from ablations import Study, register

STUDY = register(
    Study(
        name="normalization_ablation",
        question="Does the input normalisation change test error?",
        hypothesis="With BN after the first conv, the normalisation barely matters.",
        source="The paper subtracts the per-pixel mean; a widely used reproduction uses "
        "ImageNet mean/std; torchvision examples use per-channel statistics.",
        variants={
            "pixel_mean": {"normalize": "pixel_mean"},  # paper
            "channel_std": {"normalize": "channel_std"},
            "imagenet": {"normalize": "imagenet"},
            "none": {"normalize": "none"},
        },
        baseline="pixel_mean",
    )
)
