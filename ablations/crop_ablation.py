"""crop_ablation: does the crop algorithm explain the gap?

The paper pads 4 pixels and crops 32x32 but does not say what the padding holds. Caffe
pipelines subtract the mean first and pad with zeros (= the mean); torchvision's
RandomCrop(32, padding=4) pads raw pixels with black before normalising.
"""

from ablations import Study, register

STUDY = register(
    Study(
        name="crop_ablation",
        question="Does the crop algorithm change test error?",
        hypothesis="Padding raw pixels with black (torchvision) instead of with the mean "
        "(Caffe after mean subtraction) raises test error; so do reflection, resized "
        "crops and no crop at all.",
        source="The public reproduction's author suspected the crop algorithm; the paper "
        "leaves the pad value unstated (sec. 4.2, following Deeply-Supervised Nets).",
        variants={
            "pad_zero": {"crop": "pad_zero"},  # paper reading: pad with the mean
            "pad_black": {"crop": "pad_black"},  # torchvision RandomCrop(32, padding=4)
            "pad_reflect": {"crop": "pad_reflect"},  # reflection padding
            "resized": {"crop": "resized"},  # random resized crop (ImageNet-style)
            "none": {"crop": "none"},  # flips only
        },
        baseline="pad_zero",
    )
)
