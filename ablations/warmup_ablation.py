"""warmup_ablation: does ResNet-110 need the paper's warm-up?"""

from ablations import Study, register

STUDY = register(
    Study(
        name="warmup_ablation",
        question="Does the warm-up of ResNet-110 change its test error?",
        hypothesis="Footnote: starting at 0.1 converges later but reaches similar accuracy; "
        "a fixed 400-iteration warm-up matches the paper's adaptive one.",
        source="He et al. 2015, sec. 4.2 and its footnote on ResNet-110.",
        variants={
            "paper": {"warmup": "paper"},  # 0.01 until training error < 80%
            "none": {"warmup": "none"},  # 0.1 from the start
            "fixed": {"warmup": "fixed"},  # 0.01 for warmup_iters (400)
        },
        baseline="paper",
        depths=(110,),
    )
)
