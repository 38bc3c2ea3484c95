"""split_ablation: training on 50k or on the 45k of the paper's 45k/5k split."""

from ablations import Study, register

STUDY = register(
    Study(
        name="split_ablation",
        question="Does training on 45k instead of 50k images change test error?",
        hypothesis="10% fewer images raise error by a few tenths of a point.",
        source="The paper chose its schedule on 45k/5k and does not say which the final "
        "models used.",
        variants={
            "train50k": {"train_size": 50000},
            "train45k": {"train_size": 45000},
        },
        baseline="train50k",
    )
)
