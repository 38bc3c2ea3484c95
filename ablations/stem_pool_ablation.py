"""stem_pool_ablation: does a max-pool after the stem (ImageNet habit) explain the gap?"""

from ablations import Study, register

STUDY = register(
    Study(
        name="stem_pool_ablation",
        question="Does pooling after the first layer change test error?",
        hypothesis="A 3x3/2 max-pool after the stem quarters every feature map and raises error.",
        source="The public reproduction's author suspected pooling after the first layer; "
        "the paper's CIFAR nets have none (sec. 4.2).",
        variants={
            "no_pool": {"stem_pool": False},  # paper
            "pool": {"stem_pool": True},  # ImageNet-style stem
        },
        baseline="no_pool",
    )
)
