"""paper_baseline: does the paper's protocol, as configured here, reproduce Table 6?

Everything at the paper's defaults (RunConfig), ResNets and plain nets at the depths of
Table 6 and Figure 6; ResNet-110 with the paper's warm-up (lr 0.01 until the training
error is below 80%). Plain-110 is included although the paper only says it is above 60%.
"""

from ablations import Study, register

STUDY = register(
    Study(
        name="paper_baseline",
        question="Does the paper's protocol reproduce Table 6 and Figure 6?",
        hypothesis="With every switch at the paper's value, the mean test error over seeds "
        "is within noise of Table 6, and plain nets degrade with depth (Figure 6).",
        source="He et al. 2015, sec. 4.2, Table 6 and Figure 6.",
        variants={
            "resnet": {},  # the paper's ResNets, option A
            "plain": {"arch": "plain"},  # Figure 6 left: no shortcuts, same parameters
        },
        baseline="resnet",
        depths=(20, 32, 44, 56, 110),
        depth_overrides={110: {"warmup": "paper"}},  # sec. 4.2: 0.01 until error < 80%
        compare="Table 6 (ResNet) and Figure 6 (plain nets)",
    )
)
