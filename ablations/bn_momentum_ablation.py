"""bn_momentum_ablation: does the BN moving-average momentum matter?

PyTorch's default momentum 0.1 averages over ~10 batches; Caffe's
moving_average_fraction 0.999 corresponds to 0.001 (~1,000 batches).
"""

from ablations import Study, register

STUDY = register(
    Study(
        name="bn_momentum_ablation",
        question="Does the BN running-average momentum change test error?",
        hypothesis="Short averages (0.1) track the last lr phase well; very long ones "
        "(0.001) lag behind the weights and raise error at the end of training.",
        source="Caffe's BatchNorm default (0.999 fraction) differs from PyTorch's (0.1).",
        variants={
            "m0.1": {"bn_momentum": 0.1},  # PyTorch default
            "m0.01": {"bn_momentum": 0.01},
            "m0.001": {"bn_momentum": 0.001},  # Caffe's moving_average_fraction 0.999
        },
        baseline="m0.1",
    )
)
